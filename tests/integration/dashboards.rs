//! The dashboards' saved objects against the real OpenSearch: rcfd scores the reference
//! scenario (three sensors, one given many more anomalies) and indexes it through its
//! OpenSearch sink; then every panel's query, rebuilt from its saved object with the
//! time range filled in, runs against those indices, and its buckets are checked against
//! what the gRPC replies said about each event. The Vega panel's spec, fed with its real
//! query result, and pictures of the other panels (Vega-Lite specs fed with their real
//! buckets) are rendered to PNG in Node and checked: not blank, one bar per bucket.
//!
//! OpenSearch Dashboards itself cannot run here; what it does with these objects (import,
//! display) is checked against its documented formats in `src/dashboards/tests.rs`.

use std::collections::{BTreeMap, HashMap};

use opensearch::http::transport::Transport;
use opensearch::indices::IndicesRefreshParts;
use opensearch::{CountParts, OpenSearch};
use rcfd::dashboards::objects::{self, DashboardSettings};
use rcfd::dashboards::query::{panel_request, TimeRange};
use rcfd::service::config::SimulatorConfig;
use rcfd::source::grpc::proto::{self, record_result, scoring_client::ScoringClient};
use rcfd::source::simulator::Readings;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::servers::{opensearch_url, required_env, search, unique_name, InProcess};

/// 2023-11-15 00:00 UTC: on the hour, so the heat map has whole hours.
const START: i64 = 1_700_006_400_000;
const TICKS: i64 = 2_400;
/// One reading per sensor every 6 s: four hours, 240 minutes.
const STEP_MS: i64 = 6_000;
/// The sensor given an extra anomaly every 50 readings.
const HOT: &str = "DemoSensor-2";

/// What the gRPC replies said about one event.
#[derive(Debug, Clone)]
struct Scored {
    entity: String,
    t: i64,
    score: f64,
    grade: f64,
    anomaly: bool,
    learning: bool,
}

/// Scores the scenario through a running service whose sink is the real OpenSearch.
async fn fill(url: &str, prefix: &str) -> Vec<Scored> {
    let store = std::env::temp_dir().join(format!("{}.redb", unique_name("rcfd-dash")));
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let text = format!(
        "[store]\npath = '{}'\n[models]\ndetectors = ['{models}']\n[opensearch]\nurl = '{url}'\nindex_prefix = '{prefix}'\n",
        store.display()
    );
    let service = InProcess::start(&text).await;
    let channel = service.channel().await;
    let mut scoring = ScoringClient::new(channel);
    let mut readings = Readings::new(&SimulatorConfig { sensors: 3, wave: false, seed: 8, ..Default::default() });
    let mut scored = Vec::new();
    let mut batch = Vec::new();
    for tick in 0..TICKS {
        let t = START + tick * STEP_MS;
        for (entity, value, _) in readings.next_tick() {
            let value =
                if entity == HOT && tick >= 300 && tick % 50 == 25 { 100.0 + (tick % 20) as f64 } else { value };
            batch.push(proto::Record {
                detector: "iot-sensor".into(),
                entity: entity.clone(),
                event_time_ms: t,
                values: [("iotValue".to_owned(), value)].into_iter().collect(),
                id: format!("{entity}-{tick}"),
            });
        }
        if batch.len() >= 600 || tick == TICKS - 1 {
            let records = std::mem::take(&mut batch);
            let reply = scoring.score(proto::ScoreRequest { records }).await.expect("scored").into_inner();
            for result in reply.results {
                let Some(record_result::Result::Event(e)) = result.result else { panic!("scored: {result:?}") };
                scored.push(Scored {
                    entity: e.entity,
                    t: e.event_time_ms,
                    score: e.anomaly_score,
                    grade: e.anomaly_grade,
                    anomaly: e.is_anomaly,
                    learning: e.learning,
                });
            }
        }
    }
    service.stop().await;
    let _ = std::fs::remove_file(&store);
    scored
}

fn buckets(value: &Value) -> &Vec<Value> {
    value["buckets"].as_array().unwrap_or_else(|| panic!("no buckets in {value}"))
}

/// float fields keep about 7 digits.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * a.abs().max(1.0)
}

/// Per (minute, entity), the highest of `metric` among the events.
fn per_minute(events: &[Scored], metric: fn(&Scored) -> f64) -> BTreeMap<(i64, String), f64> {
    let mut out: BTreeMap<(i64, String), f64> = BTreeMap::new();
    for e in events {
        let slot = out.entry((e.t - e.t.rem_euclid(60_000), e.entity.clone())).or_insert(f64::MIN);
        *slot = slot.max(metric(e));
    }
    out
}

/// Checks a minutes x entities x max(metric) answer against the replies; returns its rows.
fn check_per_minute(answer: &Value, events: &[Scored], metric: fn(&Scored) -> f64) -> Vec<Value> {
    let expected = per_minute(events, metric);
    let minutes = buckets(&answer["aggregations"]["2"]);
    assert_eq!(minutes.len() as i64, TICKS * STEP_MS / 60_000, "one bucket per minute");
    let total: u64 = minutes.iter().map(|b| b["doc_count"].as_u64().unwrap_or(0)).sum();
    assert_eq!(total as usize, events.len(), "the per-minute buckets count every document");
    let mut rows = Vec::new();
    for minute in minutes {
        let t = minute["key"].as_i64().expect("key");
        let entities = buckets(&minute["3"]);
        let in_minute: u64 = entities.iter().map(|b| b["doc_count"].as_u64().unwrap_or(0)).sum();
        assert_eq!(Some(in_minute), minute["doc_count"].as_u64(), "every entity of the minute is split out");
        for entity in entities {
            let name = entity["key"].as_str().expect("entity").to_owned();
            let value = entity["1"]["value"].as_f64().expect("max");
            let want = expected[&(t, name.clone())];
            assert!(close(value, want), "{name} at {t}: {value} from OpenSearch, {want} from the replies");
            rows.push(json!({ "t": t, "minute": rfc_minute(t), "entity": name, "value": value }));
        }
    }
    assert_eq!(rows.len(), expected.len());
    rows
}

fn rfc_minute(t: i64) -> String {
    let in_day = t.rem_euclid(86_400_000);
    format!("{:02}:{:02}", in_day / 3_600_000, in_day / 60_000 % 60)
}

struct Rendered {
    marks: Value,
    variance: f64,
    non_white: f64,
}

/// Renders the jobs with the Node script; PNGs go to the target's tmp dir (and to
/// docs/dashboards/ when RCFD_WRITE_DOCS=1, to refresh the README's pictures).
async fn render(jobs: Vec<(String, Value, Option<Value>)>) -> HashMap<String, Rendered> {
    let node_path = required_env("RCFD_TEST_VEGA_NODE_PATH");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboards");
    std::fs::create_dir_all(&dir).expect("dir");
    let font = dir.join("DejaVuSans.ttf");
    std::fs::write(&font, dejavu::sans::regular()).expect("font");
    let names: Vec<String> = jobs.iter().map(|j| j.0.clone()).collect();
    let jobs: Vec<Value> = jobs
        .into_iter()
        .map(|(name, spec, response)| {
            let png = dir.join(format!("{name}.png"));
            let mut job = json!({ "name": name, "spec": spec, "png": png });
            if let Some(response) = response {
                job["response"] = response;
            }
            job
        })
        .collect();
    let file = dir.join("jobs.json");
    std::fs::write(&file, json!({ "font": font, "jobs": jobs }).to_string()).expect("jobs");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboards/render_vega.cjs");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(&script)
            .arg(&file)
            .env("NODE_PATH", node_path)
            .output()
            .expect("node runs")
    })
    .await
    .expect("render");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "rendering failed:\n{stderr}");
    let mut out = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let report: Value = serde_json::from_str(line).expect("the script reports JSON");
        let name = report["name"].as_str().expect("name").to_owned();
        eprintln!("rendered {name}: {report}");
        out.insert(
            name,
            Rendered {
                marks: report["marks"].clone(),
                variance: report["variance"].as_f64().unwrap_or(0.0),
                non_white: report["nonWhite"].as_f64().unwrap_or(0.0),
            },
        );
    }
    assert_eq!(out.len(), names.len(), "one report per picture:\n{stderr}");
    if std::env::var("RCFD_WRITE_DOCS").as_deref() == Ok("1") {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboards");
        std::fs::create_dir_all(&docs).expect("docs dir");
        for name in &names {
            std::fs::copy(dir.join(format!("{name}.png")), docs.join(format!("{name}.png"))).expect("copy");
        }
    }
    out
}

fn lite(title: &str, width: u32, height: u32, values: Vec<Value>, rest: Value) -> Value {
    let mut spec = json!({
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": title, "width": width, "height": height,
        "data": { "values": values },
        "config": { "font": "DejaVu Sans" }
    });
    for (k, v) in rest.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_runs_on_real_events_and_the_vega_panel_renders() {
    let url = opensearch_url();
    let client = OpenSearch::new(Transport::single_node(&url).expect("url"));
    let prefix = unique_name("rcfd-dash").to_lowercase();
    let events = fill(&url, &prefix).await;
    client.indices().refresh(IndicesRefreshParts::Index(&[&prefix])).send().await.expect("refresh");
    let count: Value = client
        .count(CountParts::Index(&[&format!("{prefix}-*")]))
        .send()
        .await
        .expect("count")
        .json()
        .await
        .expect("json");
    assert_eq!(count["count"].as_u64(), Some(events.len() as u64), "every scored event is indexed: {count}");

    let settings = DashboardSettings { index_prefix: prefix.clone(), ..DashboardSettings::default() };
    let saved = objects::saved_objects(&settings);
    let time = TimeRange { from_ms: START, to_ms: START + TICKS * STEP_MS - 1 };
    let request = |id: &str| panel_request(&saved, &settings.id(id), time).expect("the panel's request");

    // Anomalies per entity, from the replies.
    let mut anomalies: BTreeMap<String, u64> = BTreeMap::new();
    for e in events.iter().filter(|e| e.anomaly) {
        *anomalies.entry(e.entity.clone()).or_default() += 1;
    }
    let total_anomalies: u64 = anomalies.values().sum();
    let (top, top_count) = anomalies.iter().max_by_key(|(_, n)| **n).map(|(e, n)| (e.clone(), *n)).expect("anomalies");
    assert_eq!(top, HOT, "the sensor given extra anomalies has the most: {anomalies:?}");
    assert!(anomalies.values().filter(|n| **n == top_count).count() == 1, "no tie: {anomalies:?}");

    // Anomaly score per minute, split by entity.
    let req = request(objects::VIS_SCORE_PER_MINUTE);
    assert_eq!(req.index, format!("{prefix}-*"));
    let answer = search(&client, &req.index, &req.body).await;
    let score_rows = check_per_minute(&answer, &events, |e| e.score);

    // Anomaly grade over time, per entity.
    let req = request(objects::VIS_GRADE_OVER_TIME);
    let answer = search(&client, &req.index, &req.body).await;
    let grade_rows = check_per_minute(&answer, &events, |e| e.grade);
    assert!(grade_rows.iter().all(|r| (0.0..=1.0).contains(&r["value"].as_f64().unwrap_or(-1.0))));

    // Heat map: anomalies per hour and entity.
    let req = request(objects::VIS_ANOMALY_HEATMAP);
    let answer = search(&client, &req.index, &req.body).await;
    let mut expected: BTreeMap<(i64, String), u64> = BTreeMap::new();
    for e in events.iter().filter(|e| e.anomaly) {
        *expected.entry((e.t - e.t.rem_euclid(3_600_000), e.entity.clone())).or_default() += 1;
    }
    let hours = buckets(&answer["aggregations"]["2"]);
    assert_eq!(hours.len(), 4, "four hours with anomalies: {answer}");
    let mut heat_rows = Vec::new();
    for hour in hours {
        let t = hour["key"].as_i64().expect("key");
        for entity in buckets(&hour["3"]) {
            let name = entity["key"].as_str().expect("entity").to_owned();
            let n = entity["doc_count"].as_u64().expect("count");
            assert_eq!(expected.get(&(t, name.clone())), Some(&n), "{name} in hour {t}");
            heat_rows.push(json!({ "hour": rfc_minute(t), "entity": name, "anomalies": n }));
        }
    }
    let in_heat_map: u64 = heat_rows.iter().filter_map(|r| r["anomalies"].as_u64()).sum();
    assert_eq!(in_heat_map, total_anomalies, "entity x hour buckets add up to every anomaly");
    assert_eq!(heat_rows.len(), expected.len());

    // Top entities by anomalies.
    let req = request(objects::VIS_TOP_ENTITIES);
    let answer = search(&client, &req.index, &req.body).await;
    let table = buckets(&answer["aggregations"]["2"]);
    assert_eq!(table[0]["key"], top.as_str(), "the first row is the entity with most anomalies: {answer}");
    assert_eq!(table[0]["doc_count"].as_u64(), Some(top_count));
    let table_rows: Vec<Value> = table
        .iter()
        .map(|b| {
            let entity = b["key"].as_str().unwrap_or("").to_owned();
            assert_eq!(b["doc_count"].as_u64(), anomalies.get(&entity).copied(), "{entity}");
            let want =
                events.iter().filter(|e| e.anomaly && e.entity == entity).map(|e| e.score).fold(f64::MIN, f64::max);
            assert!(close(b["3"]["value"].as_f64().unwrap_or(0.0), want), "max score of {entity}");
            json!({ "entity": entity, "anomalies": b["doc_count"], "max_score": b["3"]["value"] })
        })
        .collect();
    assert_eq!(table_rows.len(), anomalies.len());

    // The latest anomalies, with their attribution.
    let req = request(objects::SEARCH_LATEST_ANOMALIES);
    let answer = search(&client, &req.index, &req.body).await;
    let hits = answer["hits"]["hits"].as_array().expect("hits");
    assert_eq!(hits.len() as u64, total_anomalies.min(500));
    let times: Vec<i64> = hits.iter().filter_map(|h| h["_source"]["@timestamp"].as_i64()).collect();
    assert!(times.len() == hits.len() && times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let columns = objects::latest_anomalies_columns(&settings);
    let mut search_rows = Vec::new();
    for hit in hits {
        let source = &hit["_source"];
        assert_eq!(source["is_anomaly"], true);
        let cells: Vec<Value> = columns
            .iter()
            .map(|c| {
                let cell = c.split('.').fold(source, |v, key| &v[key]);
                assert!(!cell.is_null(), "column {c} is in every anomaly: {source}");
                cell.clone()
            })
            .collect();
        search_rows.push(cells);
    }

    // The Vega histogram: its own query, then the same bins asked of OpenSearch directly.
    let req = request(objects::VIS_SCORE_HISTOGRAM);
    assert_eq!(req.index, format!("{prefix}-*"));
    let vega_answer = search(&client, &req.index, &req.body).await;
    let bins = vega_answer["aggregations"]["scores"]["value"].as_array().expect("the scripted metric's rows");
    let binned: u64 = bins.iter().filter_map(|b| b["count"].as_u64()).sum();
    assert_eq!(binned as usize, events.iter().filter(|e| !e.learning).count(), "every scored event, none learning");
    let direct = json!({
        "size": 0,
        "query": { "bool": { "filter": [{ "term": { "learning": false } }] } },
        "aggs": { "h": { "histogram": { "field": "anomaly_score", "interval": objects::SCORE_BIN_WIDTH, "min_doc_count": 1 } } }
    });
    let direct = search(&client, &format!("{prefix}-*"), &direct).await;
    let direct: Vec<(f64, u64)> = buckets(&direct["aggregations"]["h"])
        .iter()
        .map(|b| (b["key"].as_f64().unwrap_or(f64::NAN), b["doc_count"].as_u64().unwrap_or(0)))
        .collect();
    let from_vega: Vec<(f64, u64)> =
        bins.iter().map(|b| (b["from"].as_f64().unwrap_or(f64::NAN), b["count"].as_u64().unwrap_or(0))).collect();
    assert_eq!(from_vega, direct, "the spec's scripted metric bins as OpenSearch's histogram does");
    assert!(from_vega.len() >= 4, "scores spread over several bins: {from_vega:?}");

    // Render: the Vega panel as saved, and pictures of the other panels from their buckets.
    let spec = objects::score_histogram_spec(&settings);
    let minute_axis =
        json!({ "labelExpr": "slice(datum.label, 3) == '00' ? datum.label : ''", "labelAngle": 0, "title": null });
    let pictures = render(vec![
        ("score-histogram".into(), spec, Some(vega_answer.clone())),
        (
            "score-per-minute".into(),
            lite("Anomaly score per minute (max), split by entity", 900, 260, score_rows.clone(), json!({
                "mark": "bar",
                "encoding": {
                    "x": { "field": "minute", "type": "ordinal", "axis": minute_axis },
                    "xOffset": { "field": "entity" },
                    "y": { "field": "value", "type": "quantitative", "title": "max anomaly_score" },
                    "color": { "field": "entity", "type": "nominal" }
                }
            })),
            None,
        ),
        (
            "grade-over-time".into(),
            lite("Anomaly grade over time (max per minute)", 900, 260, grade_rows.clone(), json!({
                "mark": { "type": "line", "interpolate": "step-after" },
                "encoding": {
                    "x": { "field": "t", "type": "temporal", "timeUnit": "utcyearmonthdatehoursminutes", "title": null },
                    "y": { "field": "value", "type": "quantitative", "title": "max anomaly_grade" },
                    "color": { "field": "entity", "type": "nominal" }
                }
            })),
            None,
        ),
        (
            "anomaly-heatmap".into(),
            lite("Anomalies per entity and hour (UTC)", 420, 160, heat_rows.clone(), json!({
                "mark": "rect",
                "encoding": {
                    "x": { "field": "hour", "type": "ordinal", "title": null, "axis": { "labelAngle": 0 } },
                    "y": { "field": "entity", "type": "nominal", "title": null },
                    "color": { "field": "anomalies", "type": "quantitative", "scale": { "scheme": "reds" } }
                }
            })),
            None,
        ),
        (
            "top-entities".into(),
            lite("Top entities by anomalies", 420, 120, table_rows.clone(), json!({
                "transform": [{ "calculate": "'max score ' + format(datum.max_score, '.2f')", "as": "label" }],
                "layer": [
                    { "mark": "bar", "encoding": {
                        "y": { "field": "entity", "type": "nominal", "sort": "-x", "title": null },
                        "x": { "field": "anomalies", "type": "quantitative" }
                    }},
                    { "mark": { "type": "text", "align": "left", "dx": 4 }, "encoding": {
                        "y": { "field": "entity", "type": "nominal", "sort": "-x" },
                        "x": { "field": "anomalies", "type": "quantitative" },
                        "text": { "field": "label" }
                    }}
                ]
            })),
            None,
        ),
        ("latest-anomalies".into(), table_picture(&columns, &search_rows[..search_rows.len().min(8)]), None),
    ])
    .await;
    for (name, picture) in &pictures {
        assert!(picture.variance > 100.0 && picture.non_white > 0.01, "{name} is not blank: {}", picture.variance);
    }
    let rects = |name: &str| pictures[name].marks["rect"].as_u64().unwrap_or(0) as usize;
    assert_eq!(rects("score-histogram"), from_vega.len(), "one bar per non-empty bin");
    assert_eq!(rects("score-per-minute"), score_rows.len(), "one bar per minute and entity");
    assert_eq!(rects("anomaly-heatmap"), heat_rows.len(), "one cell per hour and entity with anomalies");
    assert_eq!(rects("top-entities"), table_rows.len());
    assert_eq!(pictures["grade-over-time"].marks["line"].as_u64(), Some(grade_rows.len() as u64));

    let _ =
        client.indices().delete(opensearch::indices::IndicesDeleteParts::Index(&[&format!("{prefix}-*")])).send().await;
}

/// The saved search's first rows as a picture of a table (text marks).
fn table_picture(columns: &[String], rows: &[Vec<Value>]) -> Value {
    let mut cells = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        for (column, cell) in columns.iter().zip(row) {
            let text = match cell {
                Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or(0.0)),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            cells.push(json!({ "row": r, "column": column, "text": text }));
        }
    }
    lite(
        "Latest anomalies (saved search)",
        1400,
        22 * rows.len() as u32,
        cells,
        json!({
            "mark": { "type": "text", "align": "left", "fontSize": 11 },
            "encoding": {
                "x": { "field": "column", "type": "ordinal", "sort": columns, "title": null, "bandPosition": 0,
                       "axis": { "orient": "top", "labelAngle": 0, "labelAlign": "left", "labelLimit": 170, "domain": false, "ticks": false } },
                "y": { "field": "row", "type": "ordinal", "axis": null },
                "text": { "field": "text" }
            }
        }),
    )
}

/// `rcfd dashboards install` against real HTTP endpoints that are not OpenSearch
/// Dashboards (none can run here): the OpenSearch node, and a port nobody listens on.
/// The import request is checked byte for byte in `src/dashboards/install.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_names_what_is_wrong_with_the_endpoint() {
    use rcfd::dashboards::install::{import_request, install, InstallError};
    let text = objects::ndjson(&DashboardSettings::default());
    let url = opensearch_url();
    let request = import_request(&url, &text, None, None).expect("request");
    let error = install(&request).await.expect_err("OpenSearch is not OpenSearch Dashboards");
    assert!(matches!(error, InstallError::NotDashboards { status: 400, .. }), "{error}");
    assert!(error.to_string().contains("not OpenSearch itself"), "{error}");

    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = closed.local_addr().expect("address");
    drop(closed);
    let request = import_request(&format!("http://{address}"), &text, None, None).expect("request");
    let error = install(&request).await.expect_err("nobody listens");
    assert!(matches!(error, InstallError::Unreachable { .. }), "{error}");
    assert!(error.to_string().contains(&address.to_string()), "{error}");
}

/// The binary: export for a prefix writes what the library makes; a bad prefix is named.
#[test]
fn the_export_command_writes_the_objects_for_the_prefix() {
    let rcfd = env!("CARGO_BIN_EXE_rcfd");
    let output = std::process::Command::new(rcfd)
        .args(["dashboards", "export", "--index-prefix", "flows", "--features", "bytes,packets"])
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let settings = DashboardSettings { index_prefix: "flows".into(), features: vec!["bytes".into(), "packets".into()] };
    assert_eq!(String::from_utf8_lossy(&output.stdout), objects::ndjson(&settings));
    let output = std::process::Command::new(rcfd)
        .args(["dashboards", "export", "--index-prefix", "Bad/Prefix"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--index-prefix \"Bad/Prefix\": lower-case letters"), "{stderr}");
}
