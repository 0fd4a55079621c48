//! Assembles the service from a checked configuration and runs it until shutdown:
//! store -> catalog and registry -> scorer -> sinks, then the sources (gRPC, simulator)
//! and the HTTP side. Shutdown goes in the record's order: stop intake, let the sinks
//! drain, snapshot every model, return.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use super::catalog::Catalog;
use super::config::{Config, ServiceConfig};
use super::scorer::Scorer;
use super::telemetry::Metrics;
use crate::detector::registry::Registry;
use crate::sink::dead_letter::{DeadLetterConfig, DeadLetterTarget};
use crate::sink::opensearch::sink::OpenSearchSink;
use crate::sink::sns::SnsSink;
use crate::sink::writer::Writer;
use crate::sink::{chain, queue};
use crate::source::grpc::api::{DetectorsApi, ModelsApi, ScoringApi};
use crate::source::grpc::auth::BearerToken;
use crate::source::grpc::convert;
use crate::source::grpc::proto::{
    self, detectors_server::DetectorsServer, models_server::ModelsServer, scoring_server::ScoringServer,
};
use crate::source::kinesis::coordinator::Coordinator;
use crate::source::kinesis::lease::LeaseTable;
use crate::source::simulator;
use crate::store::embedded::EmbeddedStore;

/// How long open gRPC calls (e.g. a ScoreStream) get to finish at shutdown.
const GRPC_GRACE: Duration = Duration::from_secs(10);

/// The sockets the service answers on; tests bind port 0.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: Option<TcpListener>,
}

/// Reads the configuration (a file, or the embedded default), applies the `RCFD_*`
/// environment overrides, and checks it.
pub fn load_config(file: Option<&Path>) -> anyhow::Result<ServiceConfig> {
    let config = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Config::from_toml_with_env(&text, std::env::vars()).with_context(|| format!("in {}", path.display()))?
        }
        None => {
            let defaults = toml::to_string(&Config::embedded_default()).context("writing the embedded default")?;
            Config::from_toml_with_env(&defaults, std::env::vars())?
        }
    };
    Ok(config.validate()?)
}

/// `rcfd serve`: binds the configured addresses and runs until SIGINT or SIGTERM.
pub fn serve(file: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let grpc = TcpListener::bind(config.grpc_listen)
            .await
            .with_context(|| format!("binding gRPC to {}", config.grpc_listen))?;
        let http = match config.http_listen {
            Some(address) => {
                Some(TcpListener::bind(address).await.with_context(|| format!("binding HTTP to {address}"))?)
            }
            None => None,
        };
        run(config, Listeners { grpc, http }, termination()).await
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn termination() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn tls(config: &Config) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&config.grpc.tls_cert, &config.grpc.tls_key) else {
        return Ok(None);
    };
    let cert = std::fs::read(cert).with_context(|| format!("grpc.tls_cert: reading {}", cert.display()))?;
    let key = std::fs::read(key).with_context(|| format!("grpc.tls_key: reading {}", key.display()))?;
    Ok(Some(ServerTlsConfig::new().identity(Identity::from_pem(cert, key))))
}

/// Runs the service on `listeners` until `shutdown` resolves, then stops it in order.
pub async fn run(
    config: ServiceConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let cfg = &config.config;
    let tls = tls(cfg)?;
    let store = Arc::new(EmbeddedStore::open(&cfg.store.path)?);
    let builtin = if cfg.simulator.enabled { vec![simulator::DETECTOR_TOML] } else { Vec::new() };
    let (catalog, detectors) = Catalog::load(&cfg.models.detectors, &builtin, store.clone())?;
    let registry = Registry::new(detectors, cfg.models.max_resident, store.clone())
        .with_max_lateness_ms(cfg.models.max_lateness_ms)
        .with_max_future_ms(cfg.models.max_future_ms);
    let metrics = Arc::new(Metrics::default());
    let (deliveries, queued) = queue::queue(queue::DEFAULT_CAPACITY);
    let scorer = Arc::new(Scorer::new(registry, cfg.models.scoring_threads(), metrics.clone(), deliveries));
    let (drain, drained) = oneshot::channel();
    let uses_aws =
        !cfg.kinesis.is_empty() || cfg.dead_letters != DeadLetterConfig::default() || cfg.sns.topic_arn.is_some();
    let aws =
        if uses_aws { Some(aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await) } else { None };
    let dead_letters = aws.as_ref().and_then(|aws| DeadLetterTarget::build(&cfg.dead_letters, aws));
    let opensearch = OpenSearchSink::connect(&cfg.opensearch, &config.opensearch_nodes, aws.as_ref()).await?;
    let sns = aws.as_ref().and_then(|aws| SnsSink::new(&cfg.sns, aws, store.clone(), metrics.clone()));
    let sinks = chain::Sinks {
        store: store.clone(),
        writer: Writer::start().context("starting the journal's writer thread")?,
        keep: cfg.store.keep_events,
        opensearch,
        sns,
        dead_letters,
        metrics,
    };
    let sinks_task = tokio::spawn(chain::run(sinks, queued, drained));

    let (stop, stopping) = watch::channel(false);
    let stopped = {
        let stopping = stopping.clone();
        move || {
            let mut stopping = stopping.clone();
            async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            }
        }
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ScoringServer<ScoringApi>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let auth = BearerToken::new(cfg.auth.token.clone());
    let check = move |request| auth.check(request);
    let max_message = cfg.grpc.max_message_bytes;
    let mut server =
        Server::builder().layer(tower::util::MapResponseLayer::new(convert::oversized_is_resource_exhausted));
    if let Some(tls) = tls {
        server = server.tls_config(tls).context("grpc.tls_cert / grpc.tls_key")?;
    }
    let grpc_address = listeners.grpc.local_addr()?;
    let grpc = server
        .add_service(health_service)
        // grpcurl 1.8 speaks v1alpha reflection, newer clients v1: serve both.
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(InterceptedService::new(
            ScoringServer::new(ScoringApi::new(scorer.clone(), cfg.grpc.max_batch_records))
                .max_decoding_message_size(max_message),
            check.clone(),
        ))
        .add_service(InterceptedService::new(
            DetectorsServer::new(DetectorsApi::new(scorer.clone(), Arc::new(catalog)))
                .max_decoding_message_size(max_message),
            check.clone(),
        ))
        .add_service(InterceptedService::new(
            ModelsServer::new(ModelsApi::new(scorer.clone())).max_decoding_message_size(max_message),
            check,
        ))
        // No Nagle: a reply's last segment must not wait for the client's delayed ACK
        // (40 ms stalls on loopback).
        .serve_with_incoming_shutdown(TcpIncoming::from(listeners.grpc).with_nodelay(Some(true)), stopped());
    let grpc = tokio::spawn(grpc);
    tracing::info!(address = %grpc_address, "gRPC API listening");

    let http = match listeners.http {
        Some(listener) => {
            let address = listener.local_addr()?;
            let server = axum::serve(listener, super::http::router(scorer.clone())).with_graceful_shutdown(stopped());
            tracing::info!("live page on http://{address}/ (metrics at /metrics)");
            Some(tokio::spawn(async move { server.await }))
        }
        None => None,
    };
    let mut consumers = Vec::new();
    if let Some(aws) = aws.as_ref().filter(|_| !cfg.kinesis.is_empty()) {
        let (kinesis, dynamodb) = (aws_sdk_kinesis::Client::new(aws), aws_sdk_dynamodb::Client::new(aws));
        for stream in &cfg.kinesis {
            if scorer.detector(&stream.detector).is_none() {
                anyhow::bail!("kinesis stream {}: detector = {:?}: no such detector", stream.stream, stream.detector);
            }
            let decoder =
                stream.decoder.build().with_context(|| format!("kinesis stream {}: decoder", stream.stream))?;
            let coordinator = Coordinator {
                decoder: Arc::from(decoder),
                leases: Arc::new(LeaseTable::new(dynamodb.clone(), stream.lease_table(), stream.worker_id())),
                config: stream.clone(),
                kinesis: kinesis.clone(),
                scorer: scorer.clone(),
            };
            tracing::info!(stream = %stream.stream, lease_table = %stream.lease_table(), "consuming");
            consumers.push(tokio::spawn(coordinator.run(stopping.clone())));
        }
    }
    let simulator = cfg.simulator.enabled.then(|| {
        tracing::info!(
            sensors = cfg.simulator.sensors,
            wave = cfg.simulator.wave,
            rate = cfg.simulator.rate,
            "simulator running"
        );
        tokio::spawn(simulator::run(scorer.clone(), cfg.simulator.clone(), stopped()))
    });

    shutdown.await;
    tracing::info!("shutting down: stopping intake");
    let _ = stop.send(true);
    if let Some(simulator) = simulator {
        let _ = simulator.await;
    }
    for consumer in consumers {
        match consumer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "a Kinesis consumer failed"),
            Err(e) => tracing::error!(error = %e, "a Kinesis consumer task failed"),
        }
    }
    if let Some(http) = http {
        let _ = http.await;
    }
    match tokio::time::timeout(GRPC_GRACE, grpc).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "gRPC server failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "gRPC server task failed"),
        Err(_) => tracing::warn!("gRPC calls still open after {GRPC_GRACE:?}; closing them"),
    }
    tracing::info!("draining the sinks");
    let _ = drain.send(());
    let _ = sinks_task.await;
    tracing::info!("snapshotting models");
    let flushed = tokio::task::spawn_blocking(move || scorer.flush()).await?;
    flushed.context("snapshotting models at shutdown")?;
    tracing::info!("stopped");
    Ok(())
}
