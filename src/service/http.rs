//! The HTTP side: the live page (one HTML file built into the binary, polling
//! `/api/live`), Prometheus metrics at `/metrics`, and `/healthz`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};

use super::scorer::Scorer;

const LIVE_PAGE: &str = include_str!("../../assets/live.html");
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn router(scorer: Arc<Scorer>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(LIVE_PAGE) }))
        .route("/api/live", get(live))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(scorer)
}

async fn live(State(scorer): State<Arc<Scorer>>) -> impl IntoResponse {
    Json(scorer.live())
}

async fn metrics(State(scorer): State<Arc<Scorer>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS)], scorer.metrics().encode())
}
