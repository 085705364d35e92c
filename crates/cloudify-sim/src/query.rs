//! List conventions shared by every list endpoint: equality filters (repeat a key for OR),
//! `_include` projection, `_sort`, `_size`/`_offset` paging and `_get_all_results`, with the
//! manager's error codes for bad input (`manager_rest/rest/rest_decorators.py`).

use std::cmp::Ordering;

use serde_json::{Map, Value, json};

use super::error::SimError;
use super::state::Model;

/// The manager's `default_page_size`.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 1000;

/// A field value as seen by filters and `_sort`, borrowed where possible so filtering 100k
/// rows allocates nothing.
#[derive(Debug, Clone)]
pub(crate) enum FieldVal<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Null,
    Json(Value),
}

impl FieldVal<'_> {
    /// Equality with a query-string value: strings compare exactly, numbers and booleans by
    /// their parsed form, null matches `None`/`null`.
    fn matches(&self, wanted: &str) -> bool {
        match self {
            FieldVal::Str(s) => *s == wanted,
            FieldVal::Int(i) => wanted.trim().parse::<i64>().is_ok_and(|w| w == *i),
            FieldVal::Bool(b) => parse_bool(wanted) == Some(*b),
            FieldVal::Null => wanted == "None" || wanted == "null",
            FieldVal::Json(Value::String(s)) => s == wanted,
            FieldVal::Json(v) => serde_json::from_str::<Value>(wanted).is_ok_and(|w| w == *v),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            FieldVal::Null => 0,
            FieldVal::Bool(_) => 1,
            FieldVal::Int(_) => 2,
            FieldVal::Str(_) => 3,
            FieldVal::Json(_) => 4,
        }
    }

    fn compare(&self, other: &FieldVal<'_>) -> Ordering {
        match (self, other) {
            (FieldVal::Str(a), FieldVal::Str(b)) => a.cmp(b),
            (FieldVal::Int(a), FieldVal::Int(b)) => a.cmp(b),
            (FieldVal::Bool(a), FieldVal::Bool(b)) => a.cmp(b),
            (FieldVal::Json(a), FieldVal::Json(b)) => a.to_string().cmp(&b.to_string()),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// Cloudify's `verify_and_convert_bool`: `true`/`false` in any case.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A resource that list endpoints can filter, sort, page and render.
pub(crate) trait Listable {
    /// Model name used in messages (`Deployment`, `NodeInstance`, ...).
    const KIND: &'static str;
    /// Response fields: valid `_include`, filter and sort keys.
    const FIELDS: &'static [&'static str];
    /// Tenant the resource belongs to.
    fn tenant(&self) -> &str;
    /// The full JSON rendering.
    fn render(&self, model: &Model) -> Map<String, Value>;
    /// One field for filtering/sorting; the default renders the whole resource, so resources
    /// override it for the fields clients filter on.
    fn field<'a>(&'a self, name: &str, model: &Model) -> FieldVal<'a> {
        self.render(model)
            .remove(name)
            .map_or(FieldVal::Null, FieldVal::Json)
    }
}

/// Parsed list query parameters.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListQuery {
    pub filters: Vec<(String, Vec<String>)>,
    pub include: Option<Vec<String>>,
    pub sort: Vec<(String, bool)>,
    pub size: usize,
    pub offset: usize,
    pub get_all: bool,
    pub search: Option<String>,
}

/// Splits a raw query string into decoded pairs, keeping repeats and order.
pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// Parses `_include` only (single-resource GETs ignore everything else, as the manager does).
pub(crate) fn parse_include<T: Listable>(
    raw: Option<&str>,
) -> Result<Option<Vec<String>>, SimError> {
    let mut include: Option<Vec<String>> = None;
    for (k, v) in query_pairs(raw) {
        if k == "_include" {
            let list = include.get_or_insert_with(Vec::new);
            list.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .map(String::from),
            );
        }
    }
    if let Some(fields) = &include {
        for f in fields {
            if !T::FIELDS.contains(&f.as_str()) {
                return Err(SimError::NoSuchIncludeField(format!(
                    "A field which was requested in _include does not exist: {f} (resource {})",
                    T::KIND
                )));
            }
        }
    }
    Ok(include)
}

impl ListQuery {
    /// Parses and validates the query string of a list request for resource `T`.
    pub fn parse<T: Listable>(raw: Option<&str>) -> Result<ListQuery, SimError> {
        let mut q = ListQuery {
            size: DEFAULT_PAGE_SIZE,
            include: parse_include::<T>(raw)?,
            ..ListQuery::default()
        };
        let mut unknown = Vec::new();
        for (k, v) in query_pairs(raw) {
            match k.as_str() {
                "_include" => {}
                "_size" => q.size = non_negative("_size", &v)?,
                "_offset" => q.offset = non_negative("_offset", &v)?,
                "_get_all_results" => {
                    q.get_all = parse_bool(&v).ok_or_else(|| {
                        SimError::BadParameters("_get_all_results must be <true/false>".into())
                    })?
                }
                "_sort" => {
                    let (field, desc) = match v.strip_prefix('-') {
                        Some(f) => (f.to_string(), true),
                        None => (v.clone(), false),
                    };
                    if !T::FIELDS.contains(&field.as_str()) {
                        return Err(SimError::BadParameters(format!(
                            "Sort key `{field}` is not a field of {}",
                            T::KIND
                        )));
                    }
                    q.sort.push((field, desc));
                }
                "_search" => q.search = Some(v),
                // The simulator stores no saved filters, so any id is unknown (as a manager
                // answers for a filter that does not exist).
                "_filter_id" => {
                    return Err(SimError::NotFound(format!(
                        "Requested `DeploymentsFilter` with ID `{v}` was not found"
                    )));
                }
                // Reserved parameters this simulator accepts and ignores (they change nothing
                // for the resources it serves).
                k if k.starts_with('_') => {}
                key => {
                    if !T::FIELDS.contains(&key) {
                        unknown.push(key.to_string());
                        continue;
                    }
                    match q.filters.iter_mut().find(|(f, _)| f == key) {
                        Some((_, values)) => values.push(v),
                        None => q.filters.push((key.to_string(), vec![v])),
                    }
                }
            }
        }
        if !unknown.is_empty() {
            unknown.dedup();
            let listed: Vec<String> = unknown.iter().map(|k| format!("'{k}'")).collect();
            return Err(SimError::BadParameters(format!(
                "Filter keys '[{}]' do not exist. Allowed keys: {}",
                listed.join(", "),
                T::FIELDS.join(", ")
            )));
        }
        Ok(q)
    }

    /// Removes the equality filter on `key` and returns its values (for callers that satisfy
    /// it through an index).
    pub fn take_filter(&mut self, key: &str) -> Option<Vec<String>> {
        let at = self.filters.iter().position(|(k, _)| k == key)?;
        Some(self.filters.remove(at).1)
    }

    /// True when nothing but paging is left to apply.
    pub fn only_paging(&self) -> bool {
        self.filters.is_empty() && self.search.is_none() && self.sort.is_empty()
    }

    fn accepts<T: Listable>(&self, item: &T, model: &Model) -> bool {
        if let Some(s) = &self.search
            && !matches!(item.field("id", model), FieldVal::Str(id) if id.contains(s.as_str()))
        {
            return false;
        }
        self.filters.iter().all(|(key, values)| {
            let v = item.field(key, model);
            values.iter().any(|w| v.matches(w))
        })
    }
}

fn non_negative(name: &str, value: &str) -> Result<usize, SimError> {
    value
        .trim()
        .parse::<usize>()
        .map_err(|_| SimError::BadParameters(format!("{name} must be a non-negative integer")))
}

/// Projects a rendered resource onto `_include` (in the order asked).
pub(crate) fn project(mut full: Map<String, Value>, include: Option<&[String]>) -> Value {
    match include {
        None => Value::Object(full),
        Some(fields) => {
            let mut out = Map::new();
            for f in fields {
                out.insert(f.clone(), full.remove(f).unwrap_or(Value::Null));
            }
            Value::Object(out)
        }
    }
}

/// Renders one page of `items` (already restricted to the caller's tenant by `tenant`) as
/// `{items, metadata: {pagination: {total, size, offset}, filtered}}`.
pub(crate) fn list_page<'m, T, I>(model: &'m Model, tenant: &str, items: I, q: &ListQuery) -> Value
where
    T: Listable + 'm,
    I: Iterator<Item = &'m T>,
{
    let (total, page) = select_page(model, tenant, items, q);
    envelope(model, page, total, q)
}

/// Applies tenant, filters, `_search` and `_sort`, then cuts the page: `(total, page)`.
pub(crate) fn select_page<'m, T, I>(
    model: &'m Model,
    tenant: &str,
    items: I,
    q: &ListQuery,
) -> (usize, Vec<&'m T>)
where
    T: Listable + 'm,
    I: Iterator<Item = &'m T>,
{
    let matching = items.filter(|i| i.tenant() == tenant && q.accepts(*i, model));
    if q.sort.is_empty() {
        // Storage order: count everything, keep only the page (no O(n) copy of 100k rows).
        let mut total = 0usize;
        let mut page = Vec::new();
        for item in matching {
            if q.get_all || (total >= q.offset && page.len() < q.size) {
                page.push(item);
            }
            total += 1;
        }
        (total, page)
    } else {
        let mut all: Vec<&T> = matching.collect();
        all.sort_by(|a, b| {
            for (field, desc) in &q.sort {
                let ord = a.field(field, model).compare(&b.field(field, model));
                let ord = if *desc { ord.reverse() } else { ord };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
        let total = all.len();
        let page = if q.get_all {
            all
        } else {
            all.into_iter().skip(q.offset).take(q.size).collect()
        };
        (total, page)
    }
}

/// Renders a list answer from one page of items and the total count.
fn envelope<T: Listable>(model: &Model, page: Vec<&T>, total: usize, q: &ListQuery) -> Value {
    let rendered: Vec<Value> = page
        .into_iter()
        .map(|i| project(i.render(model), q.include.as_deref()))
        .collect();
    let (size, offset) = if q.get_all {
        (total, 0)
    } else {
        (q.size, q.offset)
    };
    json!({
        "items": rendered,
        "metadata": {
            "pagination": {"total": total, "size": size, "offset": offset},
            "filtered": null,
        }
    })
}
