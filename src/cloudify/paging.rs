//! Reading every page of a list endpoint (`_size`/`_offset` until `metadata.pagination.total`),
//! and refusing answers whose pages make no progress.
//!
//! Offset paging over a set that changes between two pages can skip or repeat an item (Cloudify
//! sorts nothing by default): repeats are dropped by id, and a total that moved between pages
//! restarts the listing, a bounded number of times. A manager (or a proxy) that ignores
//! `_offset` answers the first page again and again: with a large total that paged for ever,
//! and with the true total it silently dropped every item past the first page (issue 20).
//! [`Pager`] refuses both with [`CloudifyError::Paging`].

use std::collections::HashSet;

use reqwest::Method;
use serde::de::DeserializeOwned;

use super::client::CallKind;
use super::models::{Identified, ListPage};
use super::{CloudifyClient, CloudifyError};

/// Page size for list calls (Cloudify's default and documented maximum).
pub(super) const PAGE_SIZE: usize = 1000;
/// Passes over a list whose total changed while it was paged (first pass included).
const LIST_ATTEMPTS: u32 = 3;

/// What to do after a page.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Ask for the page at this offset.
    Page(usize),
    /// The listing is over.
    Done,
}

/// One pass over the pages of a list: the items so far and what the pages said.
struct Pager<T> {
    route: String,
    limit: Option<usize>,
    items: Vec<T>,
    ids: HashSet<String>,
    first_total: Option<usize>,
    moved: bool,
    offset: usize,
}

impl<T: Identified> Pager<T> {
    fn new(route: &str, limit: Option<usize>) -> Pager<T> {
        Pager {
            route: route.to_owned(),
            limit,
            items: Vec::new(),
            ids: HashSet::new(),
            first_total: None,
            moved: false,
            offset: 0,
        }
    }

    fn error(&self, problem: String) -> CloudifyError {
        CloudifyError::Paging {
            route: self.route.clone(),
            problem,
        }
    }

    /// Takes the page answered at the current offset.
    fn take(&mut self, page: ListPage<T>) -> Result<Next, CloudifyError> {
        let offset = self.offset;
        if let Some(i) = page.items.iter().position(|item| item.id().is_empty()) {
            return Err(CloudifyError::Decode {
                route: self.route.clone(),
                source: <serde_json::Error as serde::de::Error>::custom(format!(
                    "item {i} of the page (offset {offset}) has no id"
                )),
            });
        }
        let got = page.items.len();
        let before = self.items.len();
        for item in page.items {
            if self.ids.insert(item.key().into_owned()) {
                self.items.push(item);
            }
        }
        let new = self.items.len() - before;
        self.offset += got;
        let total = page
            .metadata
            .pagination
            .total
            .and_then(|t| usize::try_from(t).ok())
            .unwrap_or(self.offset);
        let same_total = match self.first_total {
            None => {
                self.first_total = Some(total);
                true
            }
            Some(t) if t != total => {
                self.moved = true;
                false
            }
            Some(_) => true,
        };
        if offset > 0 && got > 0 && new == 0 {
            // An offset that moves nothing forward: the same page again. Between two honest
            // pages at most a few items repeat (a concurrent change shifts the window), never
            // the whole page, whatever the totals say.
            return Err(self.error(format!(
                "the page at offset {offset} repeats only items of earlier pages ({got} items, \
                 total {total}): the manager (or a proxy in front of it) ignores `_offset`"
            )));
        }
        if self.limit.is_some_and(|l| self.items.len() >= l) || self.offset >= total {
            return Ok(Next::Done);
        }
        if got == 0 {
            if same_total {
                // No item past the offset, yet the total (unchanged) says there are more.
                return Err(self.error(format!(
                    "an empty page at offset {offset} of a list whose total is {total}: \
                     the pages and the total disagree"
                )));
            }
            return Ok(Next::Done);
        }
        Ok(Next::Page(self.offset))
    }

    /// The items, and whether the total moved while they were paged.
    fn finish(mut self) -> (Vec<T>, bool) {
        if let Some(l) = self.limit {
            self.items.truncate(l);
        }
        (self.items, self.moved && self.limit.is_none())
    }
}

impl CloudifyClient {
    /// Fetches every page of a list endpoint (at most `limit` items when given).
    pub(super) async fn list_all<T: DeserializeOwned + Identified>(
        &self,
        route: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
        limit: Option<usize>,
    ) -> Result<Vec<T>, CloudifyError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (items, moved) = self
                .list_once(route, method.clone(), path, query, body.as_ref(), limit)
                .await?;
            if !moved {
                return Ok(items);
            }
            if attempt >= LIST_ATTEMPTS {
                tracing::warn!(
                    route,
                    "the list changed while it was paged {LIST_ATTEMPTS} times; using the last pass"
                );
                return Ok(items);
            }
        }
    }

    /// One pass over every page: the items, and whether the total moved meanwhile.
    async fn list_once<T: DeserializeOwned + Identified>(
        &self,
        route: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        limit: Option<usize>,
    ) -> Result<(Vec<T>, bool), CloudifyError> {
        let mut pager = Pager::new(route, limit);
        let page_size = limit.unwrap_or(PAGE_SIZE).min(PAGE_SIZE);
        let mut offset = 0;
        loop {
            let mut q: Vec<(&str, String)> = query.to_vec();
            q.push(("_size", page_size.to_string()));
            q.push(("_offset", offset.to_string()));
            let page: ListPage<T> = self
                .send(
                    route,
                    || {
                        let r = self.request(method.clone(), path).query(&q);
                        match body {
                            Some(b) => r.json(b),
                            None => r,
                        }
                    },
                    CallKind::Read,
                )
                .await?;
            match pager.take(page)? {
                Next::Page(next) => offset = next,
                Next::Done => return Ok(pager.finish()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudify::models::{ListMetadata, Pagination};

    #[derive(Debug, PartialEq)]
    struct Item(String);

    impl Identified for Item {
        fn id(&self) -> &str {
            &self.0
        }
    }

    fn page(ids: &[&str], total: Option<i64>) -> ListPage<Item> {
        ListPage {
            items: ids.iter().map(|i| Item((*i).to_owned())).collect(),
            metadata: ListMetadata {
                pagination: Pagination { total },
            },
        }
    }

    fn problem(r: Result<Next, CloudifyError>) -> String {
        match r {
            Err(CloudifyError::Paging { problem, .. }) => problem,
            other => panic!("expected a paging error, got {other:?}"),
        }
    }

    #[test]
    fn pages_are_read_until_the_total() {
        let mut p = Pager::new("GET /x", None);
        assert_eq!(p.take(page(&["a", "b"], Some(3))).ok(), Some(Next::Page(2)));
        assert_eq!(p.take(page(&["c"], Some(3))).ok(), Some(Next::Done));
        assert_eq!(
            p.finish(),
            (
                vec![Item("a".into()), Item("b".into()), Item("c".into())],
                false
            )
        );
    }

    #[test]
    fn nodes_of_several_deployments_are_told_apart_by_deployment() {
        use crate::cloudify::Node;
        let node = |dep: &str| Node {
            id: "worker_host".into(),
            deployment_id: dep.into(),
            ..Node::default()
        };
        let mut p = Pager::new("GET /nodes", None);
        let page = ListPage {
            items: vec![node("a"), node("b"), node("a")],
            metadata: ListMetadata {
                pagination: Pagination { total: Some(3) },
            },
        };
        assert_eq!(p.take(page).ok(), Some(Next::Done));
        assert_eq!(p.finish().0.len(), 2, "one node of each deployment");
    }

    #[test]
    fn without_a_total_the_first_page_is_all() {
        let mut p = Pager::new("GET /x", None);
        assert_eq!(p.take(page(&["a"], None)).ok(), Some(Next::Done));
    }

    #[test]
    fn a_repeated_page_means_the_offset_is_ignored() {
        let mut p = Pager::new("GET /x", None);
        assert_eq!(p.take(page(&["a", "b"], Some(5))).ok(), Some(Next::Page(2)));
        let text = problem(p.take(page(&["a", "b"], Some(5))));
        assert!(text.contains("ignores `_offset`"), "{text}");
        // With the true total the second page reached it: the rest was dropped without a word.
        let mut p = Pager::new("GET /x", None);
        p.take(page(&["a", "b"], Some(3))).expect("first page");
        assert!(matches!(
            p.take(page(&["a", "b"], Some(3))),
            Err(CloudifyError::Paging { .. })
        ));
        // With a huge total it would have paged for ever.
        let mut p = Pager::new("GET /x", None);
        p.take(page(&["a"], Some(i64::MAX))).expect("first page");
        assert!(matches!(
            p.take(page(&["a"], Some(i64::MAX))),
            Err(CloudifyError::Paging { .. })
        ));
    }

    #[test]
    fn a_page_shifted_by_a_concurrent_change_is_no_error() {
        let mut p = Pager::new("GET /x", None);
        p.take(page(&["a", "b"], Some(4))).expect("first page");
        // One item was inserted before the window: `b` comes again, with a new one.
        assert_eq!(p.take(page(&["b", "c"], Some(5))).ok(), Some(Next::Page(4)));
        assert_eq!(p.take(page(&["d"], Some(5))).ok(), Some(Next::Done));
        let (items, moved) = p.finish();
        assert_eq!(items.len(), 4);
        assert!(moved, "the total moved: the caller reads the list again");
    }

    #[test]
    fn an_empty_page_before_an_unchanged_total_is_refused() {
        let mut p = Pager::new("GET /x", None);
        p.take(page(&["a"], Some(3))).expect("first page");
        let text = problem(p.take(page(&[], Some(3))));
        assert!(text.contains("disagree"), "{text}");
        // A total that shrank meanwhile is a moved list, not an error.
        let mut p = Pager::new("GET /x", None);
        p.take(page(&["a"], Some(3))).expect("first page");
        assert_eq!(p.take(page(&[], Some(1))).ok(), Some(Next::Done));
        assert!(p.finish().1);
    }

    #[test]
    fn a_limit_stops_early_and_truncates() {
        let mut p = Pager::new("GET /x", Some(2));
        assert_eq!(
            p.take(page(&["a", "b", "c"], Some(9))).ok(),
            Some(Next::Done)
        );
        assert_eq!(p.finish().0.len(), 2);
    }

    #[test]
    fn an_item_without_an_id_fails_the_page() {
        let mut p = Pager::new("GET /x", None);
        assert!(matches!(
            p.take(page(&["a", ""], Some(2))),
            Err(CloudifyError::Decode { .. })
        ));
    }
}
