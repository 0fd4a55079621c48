//! The saved objects against the formats OpenSearch Dashboards 2.x exports and imports
//! (its sample data sets and exports: JSON-string attributes, `indexRefName` and
//! `panelRefName` references), the checked-in file against the export, and the panel
//! queries' translation.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::objects::*;
use super::query::{iso_time, panel_request, QueryError, TimeRange};

fn objects() -> Vec<Value> {
    saved_objects(&DashboardSettings::default())
}

fn json_attr(object: &Value, path: &[&str]) -> Value {
    decode_attribute(object, path).unwrap_or_else(|| panic!("{}: {path:?} is not a JSON string", object["id"]))
}

/// Every check the import and the dashboard app rely on, for one file.
fn assert_importable(text: &str) {
    let objects: Vec<Value> = text
        .lines()
        .enumerate()
        .map(|(n, line)| serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}", n + 1)))
        .collect();
    assert!(text.ends_with('\n') && !text.contains("\n\n"), "one object a line");
    let mut ids = HashSet::new();
    let by_id: HashMap<&str, &Value> = objects.iter().map(|o| (o["id"].as_str().unwrap_or(""), o)).collect();
    for object in &objects {
        let id = object["id"].as_str().expect("id is a string");
        assert!(!id.is_empty() && ids.insert(id), "{id}: ids are unique and not empty");
        let kind = object["type"].as_str().expect("type");
        let migration = object["migrationVersion"][kind].as_str().unwrap_or("");
        let expected = match kind {
            "index-pattern" => "7.6.0",
            "visualization" => "7.10.0",
            "search" | "dashboard" => "7.9.3",
            other => panic!("{id}: unexpected type {other}"),
        };
        assert_eq!(migration, expected, "{id}: migrationVersion as OpenSearch Dashboards 2.x exports it");
        let attributes = object["attributes"].as_object().expect("attributes");
        assert!(attributes["title"].as_str().is_some_and(|t| !t.is_empty()), "{id}: title");
        let references = object["references"].as_array().expect("references");
        let mut names = HashSet::new();
        for r in references {
            let (name, rtype, rid) = (r["name"].as_str(), r["type"].as_str(), r["id"].as_str());
            let (Some(name), Some(rtype), Some(rid)) = (name, rtype, rid) else { panic!("{id}: reference {r}") };
            assert!(names.insert(name), "{id}: reference names are unique");
            let target = by_id.get(rid).unwrap_or_else(|| panic!("{id}: reference {name} to missing {rid}"));
            assert_eq!(target["type"], rtype, "{id}: reference {name} has the target's type");
        }
        let source_index = |object: &Value| {
            let source = json_attr(object, &["kibanaSavedObjectMeta", "searchSourceJSON"]);
            assert!(source["filter"].is_array(), "{id}: searchSourceJSON.filter");
            assert!(source["query"]["query"].is_string() && source["query"]["language"] == "kuery", "{id}: query");
            assert!(source.get("index").is_none(), "{id}: the index goes through indexRefName, not inline");
            if let Some(name) = source["indexRefName"].as_str() {
                assert!(
                    references.iter().any(|r| r["name"] == name && r["type"] == "index-pattern"),
                    "{id}: indexRefName {name} is a reference"
                );
            }
            source["indexRefName"].as_str().map(str::to_owned)
        };
        match kind {
            "index-pattern" => {
                assert_eq!(attributes["timeFieldName"], "@timestamp");
                assert!(json_attr(object, &["fields"]).is_array(), "{id}: fields is a JSON list");
            }
            "visualization" => {
                let state = json_attr(object, &["visState"]);
                assert_eq!(state["title"], attributes["title"], "{id}: visState.title is the title");
                let vis_type = state["type"].as_str().expect("visState.type");
                assert!(
                    ["histogram", "line", "heatmap", "table", "vega"].contains(&vis_type),
                    "{id}: {vis_type} is a visualization type OpenSearch Dashboards registers"
                );
                assert!(state["params"].is_object() && state["aggs"].is_array(), "{id}: params and aggs");
                assert!(json_attr(object, &["uiStateJSON"]).is_object());
                assert!(attributes["description"].is_string() && attributes["version"] == 1);
                let index = source_index(object);
                let aggs = state["aggs"].as_array().expect("aggs");
                let agg_ids: HashSet<&str> = aggs.iter().filter_map(|a| a["id"].as_str()).collect();
                assert_eq!(agg_ids.len(), aggs.len(), "{id}: agg ids are unique strings");
                for agg in aggs {
                    assert!(agg["enabled"] == true && agg["params"].is_object(), "{id}: agg {agg}");
                    assert!(["metric", "segment", "group", "bucket"].contains(&agg["schema"].as_str().unwrap_or("")));
                    if let Some(order_by) = agg["params"]["orderBy"].as_str() {
                        assert!(agg_ids.contains(order_by), "{id}: terms ordered by agg {order_by}");
                    }
                }
                for series in state["params"]["seriesParams"].as_array().into_iter().flatten() {
                    let metric = series["data"]["id"].as_str().unwrap_or("");
                    assert!(agg_ids.contains(metric), "{id}: series of agg {metric}");
                }
                if vis_type == "vega" {
                    assert!(index.is_none() && references.is_empty(), "{id}: a Vega spec names its own index");
                    let spec: Value =
                        serde_json::from_str(state["params"]["spec"].as_str().expect("spec")).expect("JSON");
                    assert_eq!(spec["$schema"], "https://vega.github.io/schema/vega-lite/v5.json");
                } else {
                    assert!(index.is_some(), "{id}: aggregations need the index pattern");
                }
            }
            "search" => {
                assert!(source_index(object).is_some(), "{id}: a search needs the index pattern");
                let columns = attributes["columns"].as_array().expect("columns");
                assert!(!columns.is_empty() && columns.iter().all(Value::is_string));
                for pair in attributes["sort"].as_array().expect("sort") {
                    assert!(pair[0].is_string() && (pair[1] == "desc" || pair[1] == "asc"), "{id}: sort {pair}");
                }
            }
            "dashboard" => {
                assert!(source_index(object).is_none());
                let panels = json_attr(object, &["panelsJSON"]);
                let panels = panels.as_array().expect("panelsJSON is a list");
                assert_eq!(panels.len(), references.len(), "{id}: one reference per panel");
                let mut indexes = HashSet::new();
                for panel in panels {
                    let name = panel["panelRefName"].as_str().expect("panelRefName");
                    assert!(references.iter().any(|r| r["name"] == name), "{id}: {name} is a reference");
                    let grid = &panel["gridData"];
                    let (x, w) = (grid["x"].as_u64().expect("x"), grid["w"].as_u64().expect("w"));
                    assert!(grid["y"].is_u64() && grid["h"].as_u64().is_some_and(|h| h > 0) && x + w <= 48);
                    assert_eq!(grid["i"], panel["panelIndex"]);
                    assert!(indexes.insert(panel["panelIndex"].as_str().expect("panelIndex")));
                }
                assert_eq!(attributes["timeRestore"], true);
                assert!(attributes["timeFrom"].is_string() && attributes["timeTo"].is_string());
                assert!(attributes["refreshInterval"]["pause"].is_boolean());
                assert!(attributes["refreshInterval"]["value"].is_u64());
                assert!(json_attr(object, &["optionsJSON"]).is_object());
            }
            _ => unreachable!(),
        }
    }
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["type"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "dashboard").count(), 1);
    assert_eq!(kinds.iter().filter(|k| **k == "visualization").count(), 5);
    // Everything is on the dashboard.
    let dashboard = objects.iter().find(|o| o["type"] == "dashboard").expect("dashboard");
    let on_it: HashSet<&str> =
        dashboard["references"].as_array().into_iter().flatten().filter_map(|r| r["id"].as_str()).collect();
    for object in objects.iter().filter(|o| o["type"] == "visualization" || o["type"] == "search") {
        assert!(on_it.contains(object["id"].as_str().unwrap_or("")), "{} is on the dashboard", object["id"]);
    }
}

#[test]
fn the_export_is_importable() {
    assert_importable(&ndjson(&DashboardSettings::default()));
    let other = DashboardSettings { index_prefix: "flows".into(), features: vec!["bytes".into(), "packets".into()] };
    assert_importable(&ndjson(&other));
}

#[test]
fn the_checked_in_file_is_the_export() {
    let checked_in = include_str!("../../dashboards/rcfd.ndjson");
    assert!(
        checked_in == ndjson(&DashboardSettings::default()),
        "dashboards/rcfd.ndjson differs from the export: run `cargo run -- dashboards export --output dashboards/rcfd.ndjson`"
    );
}

#[test]
fn ids_are_fixed_and_follow_the_prefix() {
    let ids: Vec<String> = objects().iter().map(|o| o["id"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(
        ids,
        [
            INDEX_PATTERN_ID,
            VIS_SCORE_PER_MINUTE,
            VIS_GRADE_OVER_TIME,
            VIS_ANOMALY_HEATMAP,
            VIS_TOP_ENTITIES,
            VIS_SCORE_HISTOGRAM,
            SEARCH_LATEST_ANOMALIES,
            DASHBOARD_ID
        ]
    );
    let flows = saved_objects(&DashboardSettings { index_prefix: "flows".into(), ..Default::default() });
    assert_eq!(flows[0]["id"], "rcfd-index-pattern--flows");
    assert_eq!(flows[0]["attributes"]["title"], "flows-*");
    assert!(flows.iter().all(|o| o["id"].as_str().is_some_and(|id| id.ends_with("--flows"))));
    let spec = score_histogram_spec(&DashboardSettings { index_prefix: "flows".into(), ..Default::default() });
    assert_eq!(spec["data"]["url"]["index"], "flows-*");
}

/// Every field a panel reads is in the sink's index template (or its dynamic templates).
#[test]
fn panels_read_fields_the_index_template_maps() {
    let template =
        crate::sink::opensearch::template::index_template(crate::sink::opensearch::config::DEFAULT_INDEX_PREFIX);
    let mapped = &template["template"]["mappings"]["properties"];
    let known = |field: &str| {
        ["values.", "expected_values.", "attribution."].iter().any(|p| field.starts_with(p))
            || mapped.get(field).is_some()
    };
    let objects = objects();
    for object in &objects {
        if let Some(state) = decode_attribute(object, &["visState"]) {
            for agg in state["aggs"].as_array().into_iter().flatten() {
                if let Some(field) = agg["params"]["field"].as_str() {
                    assert!(known(field), "{}: {field} is not mapped", object["id"]);
                }
            }
        }
        for column in object["attributes"]["columns"].as_array().into_iter().flatten() {
            assert!(known(column.as_str().unwrap_or("")), "{}: column {column}", object["id"]);
        }
    }
    assert_eq!(mapped["entity"]["type"], "keyword", "terms on entity need a keyword");
}

const TIME: TimeRange = TimeRange { from_ms: 1_700_000_000_000, to_ms: 1_700_003_600_000 };

#[test]
fn bar_chart_query_nests_minutes_entities_and_the_max_score() {
    let request = panel_request(&objects(), VIS_SCORE_PER_MINUTE, TIME).expect("request");
    assert_eq!(request.index, "rcfd-events-*");
    let body = &request.body;
    assert_eq!(body["size"], 0);
    let minutes = &body["aggs"]["2"]["date_histogram"];
    assert_eq!(minutes["field"], "@timestamp");
    assert_eq!(minutes["calendar_interval"], "1m");
    let entities = &body["aggs"]["2"]["aggs"]["3"];
    assert_eq!(entities["terms"], json!({"field": "entity", "size": 10, "order": {"1": "desc"}}));
    assert_eq!(entities["aggs"]["1"], json!({"max": {"field": "anomaly_score"}}));
    let range = &body["query"]["bool"]["filter"][1]["range"]["@timestamp"];
    assert_eq!(range["gte"], "2023-11-14T22:13:20.000Z");
    assert_eq!(range["lte"], "2023-11-14T23:13:20.000Z");
    assert_eq!(body["query"]["bool"]["filter"].as_array().map(Vec::len), Some(2), "no saved query");
}

#[test]
fn count_ordered_tables_and_anomaly_queries() {
    let request = panel_request(&objects(), VIS_TOP_ENTITIES, TIME).expect("request");
    let terms = &request.body["aggs"]["2"];
    assert_eq!(terms["terms"]["order"], json!({"_count": "desc"}), "count is doc_count");
    assert_eq!(terms["aggs"], json!({"3": {"max": {"field": "anomaly_score"}}}));
    let anomalies = &request.body["query"]["bool"]["filter"][2];
    assert_eq!(anomalies, &json!({"bool": {"should": [{"match": {"is_anomaly": true}}], "minimum_should_match": 1}}));

    let heatmap = panel_request(&objects(), VIS_ANOMALY_HEATMAP, TIME).expect("request");
    assert_eq!(heatmap.body["aggs"]["2"]["date_histogram"]["calendar_interval"], "1h");
    assert_eq!(heatmap.body["aggs"]["2"]["aggs"]["3"]["terms"]["order"], json!({"_count": "desc"}));
    assert!(heatmap.body["aggs"]["2"]["aggs"]["3"].get("aggs").is_none(), "count asks for nothing");

    let search = panel_request(&objects(), SEARCH_LATEST_ANOMALIES, TIME).expect("request");
    assert_eq!(search.body["sort"], json!([{"@timestamp": {"order": "desc", "unmapped_type": "boolean"}}]));
    assert_eq!(search.body["size"], 500);
}

#[test]
fn vega_query_gets_the_time_range_for_context() {
    let request = panel_request(&objects(), VIS_SCORE_HISTOGRAM, TIME).expect("request");
    assert_eq!(request.index, "rcfd-events-*");
    assert!(request.body["aggs"]["scores"]["scripted_metric"]["map_script"].is_string());
    let must = &request.body["query"]["bool"]["must"];
    assert_eq!(must[1]["range"]["@timestamp"]["gte"], "2023-11-14T22:13:20.000Z");
    assert!(!request.body.to_string().contains('%'), "every placeholder is filled");
}

#[test]
fn untranslatable_objects_say_what_is_wrong() {
    let mut objects = objects();
    assert_eq!(panel_request(&objects, "nope", TIME), Err(QueryError::NotFound("nope".into())));
    let heatmap = objects.iter_mut().find(|o| o["id"] == VIS_ANOMALY_HEATMAP).expect("heatmap");
    heatmap["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"] =
        json!({"query": {"query": "a:b and c:d", "language": "kuery"}, "filter": [], "indexRefName": INDEX_REF_NAME})
            .to_string()
            .into();
    let error = panel_request(&objects, VIS_ANOMALY_HEATMAP, TIME).expect_err("unsupported");
    assert!(matches!(error, QueryError::UnsupportedQuery { .. }), "{error}");
    let table = objects.iter_mut().find(|o| o["id"] == VIS_TOP_ENTITIES).expect("table");
    table["references"] = json!([]);
    let error = panel_request(&objects, VIS_TOP_ENTITIES, TIME).expect_err("no index");
    assert!(error.to_string().contains(INDEX_REF_NAME), "{error}");
}

#[test]
fn times_are_written_as_the_time_picker_does() {
    assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(iso_time(951_827_696_789), "2000-02-29T12:34:56.789Z");
    assert_eq!(iso_time(-1), "1969-12-31T23:59:59.999Z");
}
