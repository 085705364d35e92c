//! What every Event this process records has in common: the Kubernetes API refuses a note over
//! 1 kB, and Cloudify's error texts (a traceback) are often longer. Its own module so that the
//! node controller, the service controller and the Lease Events share it without importing
//! each other.

/// An Event note cut to the 1 kB the API accepts (at a character boundary).
pub fn fit_note(mut text: String) -> String {
    if text.len() > 1000 {
        let mut cut = 1000;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}
