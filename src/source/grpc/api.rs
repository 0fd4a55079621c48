//! The three rcfd services. Scoring goes through `Scorer::score_async` (a batch runs
//! on the blocking pool); then the call waits for the sinks to take the results.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use super::proto;
use crate::detector::registry::{Registry, RegistryError};
use crate::service::catalog::{Catalog, CatalogError, Entry};
use crate::service::scorer::Scorer;

/// Responses a ScoreStream may have queued before it stops reading requests.
const STREAM_BUFFER: usize = 16;

fn catalog_status(e: CatalogError) -> Status {
    match e {
        CatalogError::Registry(e) => convert::registry_status(e),
        CatalogError::Config(e) => Status::invalid_argument(format!("config_toml: {e}")),
        e @ CatalogError::NameMismatch { .. } => Status::invalid_argument(format!("config_toml: {e}")),
        e @ (CatalogError::File { .. } | CatalogError::Store(_)) => Status::internal(e.to_string()),
    }
}

fn detector(entry: Entry) -> proto::Detector {
    proto::Detector {
        name: entry.detector.name,
        config_toml: entry.toml,
        entity_key: entry.detector.entity_key,
        features: entry.detector.features,
    }
}

#[derive(Clone)]
pub struct ScoringApi {
    scorer: Arc<Scorer>,
    max_batch_records: usize,
}

impl ScoringApi {
    pub fn new(scorer: Arc<Scorer>, max_batch_records: usize) -> Self {
        ScoringApi { scorer, max_batch_records }
    }

    async fn score_batch(&self, request: proto::ScoreRequest) -> Result<proto::ScoreResponse, Status> {
        let count = request.records.len();
        if count > self.max_batch_records {
            self.scorer.metrics().error("grpc", "batch_too_large");
            return Err(Status::resource_exhausted(format!(
                "records: {count} in one request; at most {} (grpc.max_batch_records)",
                self.max_batch_records
            )));
        }
        let records: Vec<_> = request.records.into_iter().map(convert::record).collect();
        let (results, delivery) = self
            .scorer
            .score_async("grpc", records)
            .await
            .map_err(|e| Status::internal(format!("scoring stopped: {e}")))?;
        let results = results.into_iter().map(|r| convert::record_result(r.map(|i| &delivery.events[i]))).collect();
        self.scorer.deliver(delivery).await;
        Ok(proto::ScoreResponse { results })
    }
}

#[tonic::async_trait]
impl proto::scoring_server::Scoring for ScoringApi {
    async fn score(&self, request: Request<proto::ScoreRequest>) -> Result<Response<proto::ScoreResponse>, Status> {
        self.score_batch(request.into_inner()).await.map(Response::new)
    }

    type ScoreStreamStream = Pin<Box<dyn Stream<Item = Result<proto::ScoreResponse, Status>> + Send>>;

    async fn score_stream(
        &self,
        request: Request<Streaming<proto::ScoreRequest>>,
    ) -> Result<Response<Self::ScoreStreamStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                let reply = match requests.message().await {
                    Ok(Some(request)) => api.score_batch(request).await,
                    Ok(None) => break,
                    Err(status) if status.code() == tonic::Code::OutOfRange => {
                        Err(Status::resource_exhausted(format!("grpc.max_message_bytes: {}", status.message())))
                    }
                    Err(status) => Err(status),
                };
                let failed = reply.is_err();
                // The client went away: stop reading its requests.
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

pub struct DetectorsApi {
    scorer: Arc<Scorer>,
    catalog: Arc<Catalog>,
}

impl DetectorsApi {
    pub fn new(scorer: Arc<Scorer>, catalog: Arc<Catalog>) -> Self {
        DetectorsApi { scorer, catalog }
    }

    /// Detector changes touch the store: off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Catalog, &Scorer) -> Result<T, CatalogError> + Send + 'static,
    ) -> Result<T, Status> {
        let (catalog, scorer) = (self.catalog.clone(), self.scorer.clone());
        tokio::task::spawn_blocking(move || f(&catalog, &scorer))
            .await
            .map_err(|e| Status::internal(format!("detector change stopped: {e}")))?
            .map_err(catalog_status)
    }
}

#[tonic::async_trait]
impl proto::detectors_server::Detectors for DetectorsApi {
    async fn create_detector(
        &self,
        request: Request<proto::CreateDetectorRequest>,
    ) -> Result<Response<proto::Detector>, Status> {
        let toml = request.into_inner().config_toml;
        let entry = self.blocking(move |catalog, scorer| catalog.create(scorer, &toml)).await?;
        Ok(Response::new(detector(entry)))
    }

    async fn update_detector(
        &self,
        request: Request<proto::UpdateDetectorRequest>,
    ) -> Result<Response<proto::Detector>, Status> {
        let proto::UpdateDetectorRequest { name, config_toml } = request.into_inner();
        let entry = self.blocking(move |catalog, scorer| catalog.update(scorer, &name, &config_toml)).await?;
        Ok(Response::new(detector(entry)))
    }

    async fn get_detector(
        &self,
        request: Request<proto::GetDetectorRequest>,
    ) -> Result<Response<proto::Detector>, Status> {
        let entry = self.catalog.get(&self.scorer, &request.into_inner().name).map_err(catalog_status)?;
        Ok(Response::new(detector(entry)))
    }

    async fn list_detectors(
        &self,
        _request: Request<proto::ListDetectorsRequest>,
    ) -> Result<Response<proto::ListDetectorsResponse>, Status> {
        let detectors = self.catalog.list(&self.scorer).into_iter().map(detector).collect();
        Ok(Response::new(proto::ListDetectorsResponse { detectors }))
    }

    async fn delete_detector(
        &self,
        request: Request<proto::DeleteDetectorRequest>,
    ) -> Result<Response<proto::DeleteDetectorResponse>, Status> {
        let name = request.into_inner().name;
        let models_deleted = self.blocking(move |catalog, scorer| catalog.delete(scorer, &name)).await?;
        Ok(Response::new(proto::DeleteDetectorResponse { models_deleted }))
    }
}

pub struct ModelsApi {
    scorer: Arc<Scorer>,
}

impl ModelsApi {
    pub fn new(scorer: Arc<Scorer>) -> Self {
        ModelsApi { scorer }
    }

    /// Runs `f` on the registry once the model of `entity` is in, off the async
    /// threads: a call that has the model out may take a batch's time to give it back.
    async fn with_model<T, F>(&self, detector: String, entity: String, f: F) -> Result<(String, String, T), Status>
    where
        T: Send + 'static,
        F: FnOnce(&mut Registry, &str, &str) -> Result<T, RegistryError> + Send + 'static,
    {
        let scorer = self.scorer.clone();
        let done = tokio::task::spawn_blocking(move || {
            let result = f(&mut scorer.registry_for_model(&detector, &entity), &detector, &entity);
            result.map(|t| (detector, entity, t))
        });
        done.await.map_err(|e| Status::internal(e.to_string()))?.map_err(convert::registry_status)
    }
}

fn model_info(detector: String, entity: String, info: crate::detector::registry::ModelInfo) -> proto::ModelInfo {
    proto::ModelInfo {
        detector,
        entity,
        points_seen: info.points_seen,
        memory_bytes: info.memory_bytes as u64,
        last_score: info.last_score,
        last_event_time_ms: info.latest_event_ms.unwrap_or(0),
    }
}

#[tonic::async_trait]
impl proto::models_server::Models for ModelsApi {
    async fn get_model(&self, request: Request<proto::ModelRef>) -> Result<Response<proto::ModelInfo>, Status> {
        let proto::ModelRef { detector, entity } = request.into_inner();
        let (detector, entity, info) = self.with_model(detector, entity, |r, d, e| r.model_info(d, e)).await?;
        Ok(Response::new(model_info(detector, entity, info)))
    }

    async fn snapshot_model(
        &self,
        request: Request<proto::ModelRef>,
    ) -> Result<Response<proto::ModelSnapshot>, Status> {
        let proto::ModelRef { detector, entity } = request.into_inner();
        let (detector, entity, snapshot) = self.with_model(detector, entity, |r, d, e| r.snapshot_model(d, e)).await?;
        Ok(Response::new(proto::ModelSnapshot { detector, entity, snapshot }))
    }

    async fn restore_model(
        &self,
        request: Request<proto::RestoreModelRequest>,
    ) -> Result<Response<proto::ModelInfo>, Status> {
        let proto::RestoreModelRequest { detector, entity, snapshot } = request.into_inner();
        let (detector, entity, info) =
            self.with_model(detector, entity, move |r, d, e| r.restore_model(d, e, &snapshot)).await?;
        Ok(Response::new(model_info(detector, entity, info)))
    }
}
