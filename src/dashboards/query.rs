//! The `_search` request each panel makes, rebuilt from its saved object the way
//! OpenSearch Dashboards builds it: bucket aggregations nested in the order of `aggs`,
//! metrics inside the innermost bucket, `count` read from `doc_count`, the time picker's
//! range as a filter on the index pattern's time field, and the saved KQL query (the
//! subset the panels use: empty or `field:value`). For a Vega panel, the spec's
//! `data.url` body with `%context%`/`%timefilter%` filled in.
//!
//! Tests send these to a real node, so a saved object whose query OpenSearch would
//! refuse, or whose buckets would not add up, fails here instead of on a user's screen.

use serde_json::{json, Map, Value};

use super::objects::{decode_attribute, find, INDEX_REF_NAME};

/// OpenSearch Dashboards' `discover:sampleSize`: rows a saved search loads.
pub const SEARCH_SAMPLE_SIZE: u64 = 500;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("no saved object with id {0:?}")]
    NotFound(String),
    #[error("{object}: {what}")]
    Malformed { object: String, what: String },
    #[error("{object}: aggregation {agg:?} ({kind}) has no translation here")]
    UnsupportedAggregation { object: String, agg: String, kind: String },
    #[error("{object}: query {query:?} is not in the translated KQL subset (empty, or one field:value)")]
    UnsupportedQuery { object: String, query: String },
}

/// The time picker's range, in milliseconds since the epoch (both ends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// What a panel sends: `POST /<index>/_search` with `body`.
#[derive(Debug, Clone, PartialEq)]
pub struct PanelRequest {
    pub index: String,
    pub body: Value,
}

/// The request of the panel whose saved object has `id`, for `time`.
pub fn panel_request(objects: &[Value], id: &str, time: TimeRange) -> Result<PanelRequest, QueryError> {
    let object = find(objects, id).ok_or_else(|| QueryError::NotFound(id.to_owned()))?;
    let malformed = |what: &str| QueryError::Malformed { object: id.to_owned(), what: what.to_owned() };
    match object["type"].as_str() {
        Some("visualization") => {
            let state = decode_attribute(object, &["visState"]).ok_or_else(|| malformed("visState is not JSON"))?;
            if state["type"] == "vega" {
                let spec = state["params"]["spec"].as_str().ok_or_else(|| malformed("no params.spec"))?;
                // The saved specs are JSON (which is HJSON); a hand-edited HJSON one is not read here.
                let spec: Value = serde_json::from_str(spec).map_err(|e| malformed(&format!("spec: {e}")))?;
                return vega_request(id, &spec, time);
            }
            let (index, time_field) = index_of(objects, object)?;
            let source = decode_attribute(object, &["kibanaSavedObjectMeta", "searchSourceJSON"])
                .ok_or_else(|| malformed("searchSourceJSON is not JSON"))?;
            let aggs = state["aggs"].as_array().ok_or_else(|| malformed("visState.aggs is not a list"))?;
            let body = json!({
                "size": 0,
                "aggs": aggregations(id, aggs)?,
                "query": filtered(id, &source, &time_field, time)?,
            });
            Ok(PanelRequest { index, body })
        }
        Some("search") => {
            let (index, time_field) = index_of(objects, object)?;
            let source = decode_attribute(object, &["kibanaSavedObjectMeta", "searchSourceJSON"])
                .ok_or_else(|| malformed("searchSourceJSON is not JSON"))?;
            let sort: Vec<Value> = object["attributes"]["sort"]
                .as_array()
                .ok_or_else(|| malformed("sort is not a list"))?
                .iter()
                .map(|pair| match (pair[0].as_str(), pair[1].as_str()) {
                    (Some(field), Some(order @ ("asc" | "desc"))) => {
                        Ok(json!({ field: { "order": order, "unmapped_type": "boolean" } }))
                    }
                    _ => Err(malformed(&format!("sort entry {pair} is not [field, \"asc\" | \"desc\"]"))),
                })
                .collect::<Result<_, _>>()?;
            let body = json!({
                "size": SEARCH_SAMPLE_SIZE,
                "sort": sort,
                "query": filtered(id, &source, &time_field, time)?,
            });
            Ok(PanelRequest { index, body })
        }
        other => Err(malformed(&format!("type {other:?} makes no query"))),
    }
}

/// The referenced index pattern's title and time field.
fn index_of(objects: &[Value], object: &Value) -> Result<(String, String), QueryError> {
    let id = object["id"].as_str().unwrap_or("?");
    let malformed = |what: String| QueryError::Malformed { object: id.to_owned(), what };
    let reference = object["references"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == INDEX_REF_NAME))
        .ok_or_else(|| malformed(format!("no reference named {INDEX_REF_NAME}")))?;
    let pattern_id = reference["id"].as_str().unwrap_or("");
    let pattern = find(objects, pattern_id)
        .filter(|p| p["type"] == "index-pattern")
        .ok_or_else(|| malformed(format!("index pattern {pattern_id:?} is not among the objects")))?;
    let title =
        pattern["attributes"]["title"].as_str().ok_or_else(|| malformed("index pattern without title".into()))?;
    let field = pattern["attributes"]["timeFieldName"]
        .as_str()
        .ok_or_else(|| malformed("index pattern without timeFieldName".into()))?;
    Ok((title.to_owned(), field.to_owned()))
}

/// `yyyy-mm-ddThh:mm:ss.sssZ`, as the time picker sends its range.
pub fn iso_time(ms: i64) -> String {
    let (year, month, day) = crate::calendar::civil_from_days(ms.div_euclid(86_400_000));
    let in_day = ms.rem_euclid(86_400_000);
    let (h, m, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

fn time_bounds(time: TimeRange) -> Value {
    json!({ "gte": iso_time(time.from_ms), "lte": iso_time(time.to_ms), "format": "strict_date_optional_time" })
}

/// The bool query: the time range on `time_field` and the saved query.
fn filtered(id: &str, source: &Value, time_field: &str, time: TimeRange) -> Result<Value, QueryError> {
    let mut filter = vec![json!({ "match_all": {} }), json!({ "range": { time_field: time_bounds(time) } })];
    let query = source["query"]["query"].as_str().unwrap_or("");
    if let Some(clause) = kql(id, query)? {
        filter.push(clause);
    }
    Ok(json!({ "bool": { "must": [], "filter": filter, "should": [], "must_not": [] } }))
}

/// `field:value` as OpenSearch Dashboards' KQL compiles it; `None` for an empty query.
fn kql(id: &str, query: &str) -> Result<Option<Value>, QueryError> {
    let query = query.trim();
    if query.is_empty() {
        return Ok(None);
    }
    let unsupported = || QueryError::UnsupportedQuery { object: id.to_owned(), query: query.to_owned() };
    let (field, value) = query.split_once(':').ok_or_else(unsupported)?;
    let (field, value) = (field.trim(), value.trim());
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if !plain(field) || !plain(value) {
        return Err(unsupported());
    }
    let value: Value = match value {
        "true" => true.into(),
        "false" => false.into(),
        v => v.parse::<f64>().map(Value::from).unwrap_or_else(|_| v.into()),
    };
    Ok(Some(json!({ "bool": { "should": [{ "match": { field: value } }], "minimum_should_match": 1 } })))
}

const BUCKET_AGGS: &[&str] = &["date_histogram", "terms"];

/// `visState.aggs` as an aggregation body: buckets nested in order, metrics innermost.
fn aggregations(id: &str, aggs: &[Value]) -> Result<Value, QueryError> {
    let enabled: Vec<&Value> = aggs.iter().filter(|a| a["enabled"] != false).collect();
    let kind = |a: &Value| a["type"].as_str().unwrap_or("").to_owned();
    let agg_id = |a: &Value| a["id"].as_str().unwrap_or("").to_owned();
    let mut inner = Map::new();
    for metric in enabled.iter().filter(|a| !BUCKET_AGGS.contains(&kind(a).as_str())) {
        match kind(metric).as_str() {
            // Read from each bucket's doc_count; nothing to ask for.
            "count" => {}
            k @ ("max" | "min" | "avg" | "sum" | "cardinality") => {
                inner.insert(agg_id(metric), json!({ k: { "field": metric["params"]["field"] } }));
            }
            k => {
                return Err(QueryError::UnsupportedAggregation {
                    object: id.into(),
                    agg: agg_id(metric),
                    kind: k.into(),
                })
            }
        }
    }
    let counts: Vec<String> = enabled.iter().filter(|a| kind(a) == "count").map(|a| agg_id(a)).collect();
    for bucket in enabled.iter().rev().filter(|a| BUCKET_AGGS.contains(&kind(a).as_str())) {
        let params = &bucket["params"];
        let body = match kind(bucket).as_str() {
            "date_histogram" => {
                let interval = params["interval"].as_str().unwrap_or("");
                // OpenSearch Dashboards' calendar units; `auto` depends on the screen and is not used.
                if !["m", "h", "d", "w", "M", "y"].contains(&interval) {
                    return Err(QueryError::UnsupportedAggregation {
                        object: id.into(),
                        agg: agg_id(bucket),
                        kind: format!("date_histogram with interval {interval:?}"),
                    });
                }
                json!({
                    "field": params["field"],
                    "calendar_interval": format!("1{interval}"),
                    "time_zone": "UTC",
                    "min_doc_count": params["min_doc_count"].as_u64().unwrap_or(1),
                })
            }
            _ => {
                let order_by = params["orderBy"].as_str().unwrap_or("_count");
                let key = if order_by == "_key" || order_by == "_count" {
                    order_by
                } else if counts.iter().any(|c| c == order_by) {
                    "_count"
                } else if inner.contains_key(order_by) {
                    order_by
                } else {
                    // OpenSearch can only order terms by a metric directly inside them.
                    return Err(QueryError::Malformed {
                        object: id.into(),
                        what: format!(
                            "terms {} is ordered by {order_by:?}, which is not a metric inside it",
                            agg_id(bucket)
                        ),
                    });
                };
                json!({ "field": params["field"], "size": params["size"], "order": { key: params["order"] } })
            }
        };
        let mut node = json!({ kind(bucket): body });
        if !inner.is_empty() {
            node["aggs"] = Value::Object(inner);
        }
        inner = Map::new();
        inner.insert(agg_id(bucket), node);
    }
    Ok(Value::Object(inner))
}

/// The first `data` entry of a Vega(-Lite) spec that queries OpenSearch, as a request.
fn vega_request(id: &str, spec: &Value, time: TimeRange) -> Result<PanelRequest, QueryError> {
    let malformed = |what: &str| QueryError::Malformed { object: id.to_owned(), what: what.to_owned() };
    let data: Vec<&Value> = match &spec["data"] {
        Value::Array(all) => all.iter().collect(),
        one => vec![one],
    };
    let url = data
        .iter()
        .find_map(|d| d["url"].as_object())
        .ok_or_else(|| malformed("no data entry with an OpenSearch query (url object)"))?;
    let index = url.get("index").and_then(Value::as_str).ok_or_else(|| malformed("data.url has no index"))?;
    let mut body = url.get("body").cloned().unwrap_or_else(|| json!({}));
    if url.get("%context%") == Some(&Value::Bool(true)) {
        let field =
            url.get("%timefield%").and_then(Value::as_str).ok_or_else(|| malformed("%context% without %timefield%"))?;
        if body.get("query").is_some() {
            // As OpenSearch Dashboards: the dashboard's context replaces the query.
            return Err(malformed("data.url.body.query together with %context%"));
        }
        body["query"] = json!({ "bool": { "must": [{ "match_all": {} }, { "range": { field: time_bounds(time) } }] } });
    }
    fill_timefilter(&mut body, time);
    Ok(PanelRequest { index: index.to_owned(), body })
}

/// Replaces every `{"%timefilter%": true}` object with the time range's bounds.
fn fill_timefilter(value: &mut Value, time: TimeRange) {
    match value {
        Value::Object(map) if map.get("%timefilter%") == Some(&Value::Bool(true)) => *value = time_bounds(time),
        Value::Object(map) => map.values_mut().for_each(|v| fill_timefilter(v, time)),
        Value::Array(items) => items.iter_mut().for_each(|v| fill_timefilter(v, time)),
        _ => {}
    }
}
