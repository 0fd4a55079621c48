//! The saved objects of rcfd's dashboard, in the format OpenSearch Dashboards 2.x exports
//! and imports (`_import` of NDJSON, one object a line): the index pattern for
//! `<prefix>-*`, five visualizations, the saved search of the latest anomalies and the
//! dashboard that holds them. Ids are fixed strings, so an import with `overwrite=true`
//! replaces the previous version instead of adding copies.
//!
//! Attributes that OpenSearch Dashboards keeps as JSON strings (`visState`,
//! `searchSourceJSON`, `panelsJSON`, ...) are built as values and encoded here, once.
//! `migrationVersion` carries the versions OpenSearch Dashboards 2.x stamps on its own
//! exports, so the import does not run migrations meant for older formats.

use serde_json::{json, Value};

use crate::sink::opensearch::config::DEFAULT_INDEX_PREFIX;

pub const INDEX_PATTERN_ID: &str = "rcfd-index-pattern";
pub const VIS_SCORE_PER_MINUTE: &str = "rcfd-vis-score-per-minute";
pub const VIS_GRADE_OVER_TIME: &str = "rcfd-vis-grade-over-time";
pub const VIS_ANOMALY_HEATMAP: &str = "rcfd-vis-anomaly-heatmap";
pub const VIS_TOP_ENTITIES: &str = "rcfd-vis-top-entities";
pub const VIS_SCORE_HISTOGRAM: &str = "rcfd-vis-score-histogram";
pub const SEARCH_LATEST_ANOMALIES: &str = "rcfd-search-latest-anomalies";
pub const DASHBOARD_ID: &str = "rcfd-dashboard";

/// The dashboard's time range when it opens. Six hours: enough columns for the hourly
/// heat map while the per-minute chart stays readable.
pub const DEFAULT_TIME_FROM: &str = "now-6h";
pub const DEFAULT_TIME_TO: &str = "now";
/// The reference scenario's feature, the default for the saved search's columns.
pub const DEFAULT_FEATURES: &[&str] = &["iotValue"];
/// Bin width of the score histogram (the Vega panel).
pub const SCORE_BIN_WIDTH: f64 = 0.25;
/// The reference name every index-pattern reference of a visualization or search has.
pub const INDEX_REF_NAME: &str = "kibanaSavedObjectMeta.searchSourceJSON.index";
/// Anomalies only, in the query language the panels are saved with (KQL).
pub const ANOMALIES_QUERY: &str = "is_anomaly:true";

/// What the saved objects are made for.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardSettings {
    /// The OpenSearch sink's `index_prefix`: the index pattern is `<prefix>-*`.
    pub index_prefix: String,
    /// Feature names whose value, expected value and attribution the latest-anomalies
    /// search shows as columns.
    pub features: Vec<String>,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        DashboardSettings {
            index_prefix: DEFAULT_INDEX_PREFIX.into(),
            features: DEFAULT_FEATURES.iter().map(|f| (*f).to_owned()).collect(),
        }
    }
}

impl DashboardSettings {
    /// The saved object id for `base`: the fixed id for the default prefix, suffixed
    /// with the prefix otherwise, so dashboards for two prefixes can live side by side.
    pub fn id(&self, base: &str) -> String {
        if self.index_prefix == DEFAULT_INDEX_PREFIX {
            base.to_owned()
        } else {
            format!("{base}--{}", self.index_prefix)
        }
    }

    fn title(&self, title: &str) -> String {
        if self.index_prefix == DEFAULT_INDEX_PREFIX {
            format!("rcfd: {title}")
        } else {
            format!("rcfd ({}): {title}", self.index_prefix)
        }
    }

    pub fn index_pattern(&self) -> String {
        format!("{}-*", self.index_prefix)
    }
}

/// Every saved object, referenced ones before those that refer to them.
pub fn saved_objects(settings: &DashboardSettings) -> Vec<Value> {
    let mut objects = vec![index_pattern(settings)];
    objects.extend(visualizations().iter().map(|v| visualization(settings, v)));
    objects.push(score_histogram(settings));
    objects.push(latest_anomalies(settings));
    objects.push(dashboard(settings));
    objects
}

/// The NDJSON file the import API takes: one object a line.
pub fn ndjson(settings: &DashboardSettings) -> String {
    saved_objects(settings).iter().map(|o| format!("{o}\n")).collect()
}

/// The saved object with `id` among `objects`.
pub fn find<'a>(objects: &'a [Value], id: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["id"] == id)
}

/// A JSON attribute kept as a string, decoded (`visState`, `searchSourceJSON`, ...).
pub fn decode_attribute(object: &Value, path: &[&str]) -> Option<Value> {
    let text = path.iter().try_fold(&object["attributes"], |v, key| v.get(key))?.as_str()?;
    serde_json::from_str(text).ok()
}

fn index_pattern(settings: &DashboardSettings) -> Value {
    json!({
        "id": settings.id(INDEX_PATTERN_ID),
        "type": "index-pattern",
        "migrationVersion": { "index-pattern": "7.6.0" },
        "attributes": {
            "title": settings.index_pattern(),
            "timeFieldName": "@timestamp",
            // Empty on purpose: OpenSearch Dashboards then reads the field list from the
            // cluster on first use, including each deployment's own `values.<feature>`.
            "fields": "[]",
        },
        "references": [],
    })
}

/// One aggregation-based visualization (vislib charts, heat map, table).
struct Vis {
    id: &'static str,
    title: &'static str,
    description: &'static str,
    kind: &'static str,
    params: Value,
    aggs: Value,
    query: &'static str,
}

fn count(id: &str) -> Value {
    json!({ "id": id, "enabled": true, "type": "count", "schema": "metric", "params": {} })
}

fn max(id: &str, field: &str, label: &str) -> Value {
    json!({ "id": id, "enabled": true, "type": "max", "schema": "metric", "params": { "field": field, "customLabel": label } })
}

/// `interval` in OpenSearch Dashboards' own units (`m`, `h`, ...).
fn date_histogram(id: &str, schema: &str, interval: &str) -> Value {
    json!({ "id": id, "enabled": true, "type": "date_histogram", "schema": schema, "params": {
        "field": "@timestamp", "useNormalizedOpenSearchInterval": true, "scaleMetricValues": false,
        "interval": interval, "drop_partials": false, "min_doc_count": 1, "extended_bounds": {}
    }})
}

fn entity_terms(id: &str, schema: &str, order_by: &str, size: u32) -> Value {
    json!({ "id": id, "enabled": true, "type": "terms", "schema": schema, "params": {
        "field": "entity", "orderBy": order_by, "order": "desc", "size": size,
        "otherBucket": false, "otherBucketLabel": "Other", "missingBucket": false, "missingBucketLabel": "Missing",
        "customLabel": "entity"
    }})
}

/// The parameters of a vislib point-series chart (bar or line) with one metric, id "1".
fn point_series(kind: &str, mode: &str, metric_label: &str, axis_title: &str) -> Value {
    json!({
        "type": kind,
        "grid": { "categoryLines": false },
        "categoryAxes": [{
            "id": "CategoryAxis-1", "type": "category", "position": "bottom", "show": true, "style": {},
            "scale": { "type": "linear" }, "labels": { "show": true, "filter": true, "truncate": 100 }, "title": {}
        }],
        "valueAxes": [{
            "id": "ValueAxis-1", "name": "LeftAxis-1", "type": "value", "position": "left", "show": true, "style": {},
            "scale": { "type": "linear", "mode": "normal" },
            "labels": { "show": true, "rotate": 0, "filter": false, "truncate": 100 }, "title": { "text": axis_title }
        }],
        "seriesParams": [{
            "show": true, "type": kind, "mode": mode, "data": { "label": metric_label, "id": "1" },
            "valueAxis": "ValueAxis-1", "drawLinesBetweenPoints": true, "lineWidth": 2, "interpolate": "linear",
            "showCircles": true
        }],
        "addTooltip": true, "addLegend": true, "legendPosition": "right", "times": [], "addTimeMarker": false,
        "labels": { "show": false },
        "thresholdLine": { "show": false, "value": 10, "width": 1, "style": "full", "color": "#E7664C" }
    })
}

fn visualizations() -> Vec<Vis> {
    vec![
        Vis {
            id: VIS_SCORE_PER_MINUTE,
            title: "anomaly score per minute",
            description: "The highest ANOMALY_SCORE of each minute, one bar per entity (the seed material's chart).",
            kind: "histogram",
            params: point_series("histogram", "normal", "max anomaly_score", "anomaly score"),
            aggs: json!([
                max("1", "anomaly_score", "max anomaly_score"),
                date_histogram("2", "segment", "m"),
                entity_terms("3", "group", "1", 10),
            ]),
            query: "",
        },
        Vis {
            id: VIS_GRADE_OVER_TIME,
            title: "anomaly grade over time",
            description: "The highest anomaly grade (0 to 1) of each minute, one line per entity.",
            kind: "line",
            params: point_series("line", "normal", "max anomaly_grade", "anomaly grade"),
            aggs: json!([
                max("1", "anomaly_grade", "max anomaly_grade"),
                date_histogram("2", "segment", "m"),
                entity_terms("3", "group", "1", 10),
            ]),
            query: "",
        },
        Vis {
            id: VIS_ANOMALY_HEATMAP,
            title: "anomalies per entity and hour",
            description: "How many events were flagged, per hour (columns) and entity (rows).",
            kind: "heatmap",
            params: json!({
                "type": "heatmap", "addTooltip": true, "addLegend": true, "enableHover": false,
                "legendPosition": "right", "times": [], "colorsNumber": 4, "colorSchema": "Reds",
                "setColorRange": false, "colorsRange": [], "invertColors": false, "percentageMode": false,
                "valueAxes": [{
                    "show": false, "id": "ValueAxis-1", "type": "value",
                    "scale": { "type": "linear", "defaultYExtents": false },
                    "labels": { "show": false, "rotate": 0, "overwriteColor": false, "color": "black" }
                }]
            }),
            aggs: json!([count("1"), date_histogram("2", "segment", "h"), entity_terms("3", "group", "1", 20)]),
            query: ANOMALIES_QUERY,
        },
        Vis {
            id: VIS_TOP_ENTITIES,
            title: "top entities by anomalies",
            description: "The entities with the most flagged events, with their highest score.",
            kind: "table",
            params: json!({
                "perPage": 10, "showPartialRows": false, "showMetricsAtAllLevels": false,
                "sort": { "columnIndex": null, "direction": null }, "showTotal": false, "totalFunc": "sum",
                "percentageCol": ""
            }),
            aggs: json!([
                { "id": "1", "enabled": true, "type": "count", "schema": "metric", "params": { "customLabel": "anomalies" } },
                max("3", "anomaly_score", "max anomaly_score"),
                entity_terms("2", "bucket", "1", 10),
            ]),
            query: ANOMALIES_QUERY,
        },
    ]
}

fn search_source(query: &str, index: bool) -> Value {
    let mut source = json!({ "query": { "query": query, "language": "kuery" }, "filter": [] });
    if index {
        source["indexRefName"] = INDEX_REF_NAME.into();
    }
    source
}

fn index_reference(settings: &DashboardSettings) -> Value {
    json!([{ "name": INDEX_REF_NAME, "type": "index-pattern", "id": settings.id(INDEX_PATTERN_ID) }])
}

fn visualization(settings: &DashboardSettings, vis: &Vis) -> Value {
    let title = settings.title(vis.title);
    let state = json!({ "title": title, "type": vis.kind, "params": vis.params, "aggs": vis.aggs });
    json!({
        "id": settings.id(vis.id),
        "type": "visualization",
        "migrationVersion": { "visualization": "7.10.0" },
        "attributes": {
            "title": title,
            "visState": state.to_string(),
            "uiStateJSON": "{}",
            "description": vis.description,
            "version": 1,
            "kibanaSavedObjectMeta": { "searchSourceJSON": search_source(vis.query, true).to_string() }
        },
        "references": index_reference(settings),
    })
}

/// The Vega-Lite spec of the score histogram: the query inside it bins the scores with a
/// scripted metric (as the seed material did), which also leaves out events of models
/// still learning (their score is 0 and would dwarf every other bar). Bins are keyed by
/// strings in the shard states: OpenSearch cannot send a map with number keys between
/// the shard and the reduce phase.
pub fn score_histogram_spec(settings: &DashboardSettings) -> Value {
    const MAP: &str = "if (doc['learning'].size() > 0 && doc['learning'].value == false \
        && doc['anomaly_score'].size() > 0) { String bin = String.valueOf((long) Math.floor(doc['anomaly_score'].value / params.width)); \
        state.bins.merge(bin, 1L, (a, b) -> a + b); }";
    const REDUCE: &str = "Map all = new HashMap(); for (s in states) { if (s != null) { for (e in s.entrySet()) \
        { all.merge(e.getKey(), e.getValue(), (a, b) -> a + b); } } } List rows = new ArrayList(); \
        for (e in all.entrySet()) { long bin = Long.parseLong(e.getKey()); rows.add(['from': bin * params.width, \
        'to': (bin + 1) * params.width, 'count': e.getValue()]); } \
        rows.sort((a, b) -> Double.compare(a['from'], b['from'])); return rows;";
    json!({
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": "Anomaly scores of scored events (models still learning left out)",
        "data": {
            "url": {
                "index": settings.index_pattern(),
                // The dashboard's query, filters and time range apply to this query too.
                "%context%": true,
                "%timefield%": "@timestamp",
                "body": {
                    "size": 0,
                    "aggs": {
                        "scores": {
                            "scripted_metric": {
                                "params": { "width": SCORE_BIN_WIDTH },
                                "init_script": "state.bins = new HashMap();",
                                "map_script": MAP,
                                "combine_script": "return state.bins;",
                                "reduce_script": REDUCE
                            }
                        }
                    }
                }
            },
            "format": { "property": "aggregations.scores.value" }
        },
        "mark": { "type": "bar", "tooltip": true, "color": "#54B399" },
        "encoding": {
            "x": { "field": "from", "type": "quantitative", "bin": { "binned": true, "step": SCORE_BIN_WIDTH },
                   "title": "anomaly score" },
            "x2": { "field": "to" },
            // Nearly every event scores about 1: a log scale keeps the rare high bars visible.
            "y": { "field": "count", "type": "quantitative", "title": "events", "scale": { "type": "symlog" } }
        }
    })
}

fn score_histogram(settings: &DashboardSettings) -> Value {
    let title = settings.title("histogram of anomaly scores");
    // Saved pretty-printed: the spec is what users edit in the Vega editor. JSON is HJSON.
    let spec = serde_json::to_string_pretty(&score_histogram_spec(settings)).unwrap_or_default();
    let state = json!({ "title": title, "type": "vega", "params": { "spec": spec }, "aggs": [] });
    json!({
        "id": settings.id(VIS_SCORE_HISTOGRAM),
        "type": "visualization",
        "migrationVersion": { "visualization": "7.10.0" },
        "attributes": {
            "title": title,
            "visState": state.to_string(),
            "uiStateJSON": "{}",
            "description": "Vega: how the scores spread, in bins of 0.25, computed by the query inside the spec.",
            "version": 1,
            "kibanaSavedObjectMeta": { "searchSourceJSON": search_source("", false).to_string() }
        },
        // A Vega spec names its index itself.
        "references": [],
    })
}

/// The saved search's columns: who, how anomalous, and per feature the value, the
/// expected value and the attribution.
pub fn latest_anomalies_columns(settings: &DashboardSettings) -> Vec<String> {
    let mut columns: Vec<String> =
        ["entity", "detector", "anomaly_score", "anomaly_grade"].iter().map(|c| (*c).to_owned()).collect();
    for feature in &settings.features {
        columns.push(format!("values.{feature}"));
        columns.push(format!("expected_values.{feature}"));
        columns.push(format!("attribution.{feature}.direction"));
        columns.push(format!("attribution.{feature}.strength"));
    }
    columns
}

fn latest_anomalies(settings: &DashboardSettings) -> Value {
    let mut source = search_source(ANOMALIES_QUERY, true);
    source["highlightAll"] = true.into();
    source["version"] = true.into();
    json!({
        "id": settings.id(SEARCH_LATEST_ANOMALIES),
        "type": "search",
        "migrationVersion": { "search": "7.9.3" },
        "attributes": {
            "title": settings.title("latest anomalies"),
            "description": "Flagged events, newest first, with the value, expected value and attribution per feature.",
            "hits": 0,
            "columns": latest_anomalies_columns(settings),
            "sort": [["@timestamp", "desc"]],
            "version": 1,
            "kibanaSavedObjectMeta": { "searchSourceJSON": source.to_string() }
        },
        "references": index_reference(settings),
    })
}

/// The panels on the 48-column grid: (object id, type, x, y, w, h).
const PANELS: &[(&str, &str, u32, u32, u32, u32)] = &[
    (VIS_SCORE_PER_MINUTE, "visualization", 0, 0, 24, 15),
    (VIS_GRADE_OVER_TIME, "visualization", 24, 0, 24, 15),
    (VIS_ANOMALY_HEATMAP, "visualization", 0, 15, 24, 15),
    (VIS_TOP_ENTITIES, "visualization", 24, 15, 12, 15),
    (VIS_SCORE_HISTOGRAM, "visualization", 36, 15, 12, 15),
    (SEARCH_LATEST_ANOMALIES, "search", 0, 30, 48, 15),
];

fn dashboard(settings: &DashboardSettings) -> Value {
    let panels: Vec<Value> = PANELS
        .iter()
        .enumerate()
        .map(|(i, (_, _, x, y, w, h))| {
            let index = (i + 1).to_string();
            json!({
                "version": "7.10.0",
                "gridData": { "x": x, "y": y, "w": w, "h": h, "i": index },
                "panelIndex": index,
                "embeddableConfig": {},
                "panelRefName": format!("panel_{i}")
            })
        })
        .collect();
    let references: Vec<Value> = PANELS
        .iter()
        .enumerate()
        .map(|(i, (id, kind, ..))| json!({ "name": format!("panel_{i}"), "type": kind, "id": settings.id(id) }))
        .collect();
    json!({
        "id": settings.id(DASHBOARD_ID),
        "type": "dashboard",
        "migrationVersion": { "dashboard": "7.9.3" },
        "attributes": {
            "title": settings.title("anomalies"),
            "description": format!("Scored events of rcfd in {}", settings.index_pattern()),
            "hits": 0,
            "panelsJSON": Value::Array(panels).to_string(),
            "optionsJSON": json!({ "useMargins": true, "hidePanelTitles": false }).to_string(),
            "version": 1,
            "timeRestore": true,
            "timeFrom": DEFAULT_TIME_FROM,
            "timeTo": DEFAULT_TIME_TO,
            "refreshInterval": { "pause": false, "value": 60000 },
            "kibanaSavedObjectMeta": { "searchSourceJSON": search_source("", false).to_string() }
        },
        "references": references,
    })
}
