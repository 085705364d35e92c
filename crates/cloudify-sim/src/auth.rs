//! Authentication (basic auth or `Authentication-Token`), account lockout, and the `Tenant`
//! header check, with the manager's messages (`manager_rest/security/*`).

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, Utc};
use rand::Rng;

use super::error::SimError;
use super::state::{Model, Token, now_stamp};

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub username: String,
    pub role: String,
    /// The `Tenant` header, validated (None only where no tenant is needed).
    pub tenant: Option<String>,
}

impl Caller {
    /// The tenant of a tenant-scoped call (validated by [`authenticate`]).
    pub fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or("")
    }
}

const NO_AUTH: &str = "User unauthorized: No authentication info provided";

fn failed_for(username: &str) -> SimError {
    SimError::Unauthorized(format!(
        "User unauthorized: Authentication failed for <User username=`{username}`>. \
         Wrong credentials or locked account"
    ))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Authenticates a request and, when `need_tenant`, checks its `Tenant` header.
pub(crate) fn authenticate(
    model: &mut Model,
    headers: &HeaderMap,
    need_tenant: bool,
) -> Result<Caller, SimError> {
    let (username, role) = if let Some(token) = header(headers, "Authentication-Token") {
        token_user(model, token)?
    } else if let Some(auth) = header(headers, "Authorization") {
        basic_user(model, auth)?
    } else {
        return Err(SimError::Unauthorized(NO_AUTH.into()));
    };
    let tenant = header(headers, "Tenant").map(str::to_string);
    match &tenant {
        None if need_tenant => {
            return Err(SimError::Forbidden(
                "Authorization failed: tenant not provided".into(),
            ));
        }
        None => {}
        Some(t) if !model.tenants.contains(t) => {
            return Err(SimError::Forbidden(format!(
                "Authorization failed: Tried to authenticate with invalid tenant name: {t}"
            )));
        }
        Some(t) => {
            let member = model
                .users
                .get(&username.to_lowercase())
                .is_some_and(|u| u.tenants.contains(t));
            if role != "sys_admin" && !member {
                return Err(SimError::Forbidden(format!(
                    "User `{username}` is not permitted to perform the action in the tenant `{t}`"
                )));
            }
        }
    }
    Ok(Caller {
        username,
        role,
        tenant,
    })
}

fn basic_user(model: &mut Model, auth: &str) -> Result<(String, String), SimError> {
    let encoded = auth
        .strip_prefix("Basic ")
        .ok_or_else(|| SimError::Unauthorized(NO_AUTH.into()))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| SimError::Unauthorized(NO_AUTH.into()))?;
    let (name, password) = decoded
        .split_once(':')
        .ok_or_else(|| SimError::Unauthorized(NO_AUTH.into()))?;
    let policy = model.auth;
    let Some(user) = model.users.get_mut(&name.to_lowercase()) else {
        return Err(failed_for(name));
    };
    // `User.is_locked`: more than `failed_logins_before_account_lock` failures, the last one
    // within `account_lock_period` minutes (-1 disables locking).
    let locked = policy.account_lock_period_minutes >= 0
        && user.failed_logins > policy.failed_logins_before_account_lock
        && user.last_failed_login.is_some_and(|t| {
            let period = u64::try_from(policy.account_lock_period_minutes).unwrap_or(0);
            t.elapsed() < Duration::from_secs(period.saturating_mul(60))
        });
    if locked || user.password != password {
        user.failed_logins += 1;
        user.last_failed_login = Some(Instant::now());
        return Err(failed_for(&user.username));
    }
    user.failed_logins = 0;
    Ok((user.username.clone(), user.role.clone()))
}

fn token_user(model: &mut Model, value: &str) -> Result<(String, String), SimError> {
    let invalid = || SimError::Unauthorized("User unauthorized: Invalid token structure".into());
    let rest = value.strip_prefix("ctok-").ok_or_else(invalid)?;
    let (id, secret) = rest.split_once('-').ok_or_else(invalid)?;
    let token = model
        .tokens
        .iter_mut()
        .find(|t| t.id == id && t.secret == secret)
        .ok_or_else(|| {
            SimError::Unauthorized("User unauthorized: Authentication failed for token".into())
        })?;
    if token.expiration.is_some_and(|e| e <= Utc::now()) {
        return Err(SimError::Unauthorized(
            "User unauthorized: Token is expired".into(),
        ));
    }
    token.last_used = Some(now_stamp());
    let username = token.username.clone();
    let role = model
        .users
        .get(&username.to_lowercase())
        .map(|u| u.role.clone())
        .ok_or_else(|| failed_for(&username))?;
    Ok((username, role))
}

/// Parses an `expiration_date` as the Python client sends it: `+10h`, `+30 minutes`,
/// `+1 day`, `YYYY-MM-DD HH:mm` or RFC 3339.
pub(crate) fn parse_expiration(text: &str) -> Result<DateTime<Utc>, SimError> {
    let bad = || SimError::BadParameters(format!("Invalid expiration date: {text}"));
    let text = text.trim();
    if let Some(rel) = text.strip_prefix('+') {
        let digits: String = rel.chars().take_while(char::is_ascii_digit).collect();
        let n: i64 = digits.parse().map_err(|_| bad())?;
        let unit = rel[digits.len()..].trim().to_lowercase();
        let unit_seconds: i64 = match unit.as_str() {
            "s" | "sec" | "second" | "seconds" => 1,
            "m" | "min" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86400,
            "w" | "week" | "weeks" => 7 * 86400,
            _ => return Err(bad()),
        };
        // Checked all the way: absurd expirations are a 400, not an overflow.
        return n
            .checked_mul(unit_seconds)
            .and_then(chrono::Duration::try_seconds)
            .and_then(|d| Utc::now().checked_add_signed(d))
            .ok_or_else(bad);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, fmt) {
            return Ok(t.and_utc());
        }
    }
    Err(bad())
}

/// Creates a token for `username` (`ctok-<id>-<secret>`).
pub(crate) fn create_token(
    model: &mut Model,
    username: &str,
    description: Option<String>,
    expiration: Option<DateTime<Utc>>,
) -> Token {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(ALPHABET[model.rng.random_range(0..ALPHABET.len())]))
            .collect()
    };
    let token = Token {
        id: pick(10),
        secret: pick(32),
        username: username.to_string(),
        description,
        expiration,
        last_used: None,
    };
    model.tokens.push(token.clone());
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;
    use axum::http::HeaderValue;

    fn basic(user: &str, pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        h.insert(
            "Authorization",
            HeaderValue::from_str(&format!("Basic {enc}")).expect("header"),
        );
        h.insert("Tenant", HeaderValue::from_static("default_tenant"));
        h
    }

    #[test]
    fn fifth_bad_password_locks_the_account() {
        let mut model =
            crate::state::Model::from_scenario(&Scenario::default_demo()).expect("model");
        for _ in 0..4 {
            assert!(authenticate(&mut model, &basic("admin", "nope"), true).is_err());
        }
        // Four failures: not locked yet, and a success resets the counter.
        authenticate(&mut model, &basic("admin", "admin"), true).expect("still unlocked");
        for _ in 0..5 {
            assert!(authenticate(&mut model, &basic("admin", "nope"), true).is_err());
        }
        let err = authenticate(&mut model, &basic("admin", "admin"), true).expect_err("locked");
        assert_eq!(err.error_code(), "unauthorized_error");
    }

    #[test]
    fn expirations_parse() {
        assert!(parse_expiration("+10h").expect("rel") > Utc::now());
        assert!(parse_expiration("+1 day").is_ok());
        assert!(parse_expiration("2030-01-02 03:04").is_ok());
        assert!(parse_expiration("soon").is_err());
        assert!(parse_expiration("+999999999999999999 weeks").is_err());
    }
}
