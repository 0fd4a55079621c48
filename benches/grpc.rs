//! The gRPC API's cost over the detector itself. Criterion measures records per second
//! for (a) the detector in process (the registry, one model per entity) and (b) batch
//! `Score` calls of the same records over loopback to a running service (which also
//! builds scored events and journals them). Then, outside criterion, the unary `Score`
//! latency: first the peak rate of one-record calls from a few concurrent clients,
//! then calls paced at half that rate, reporting p50/p99 and the process's CPU time per
//! call, and the standard health check paced the same way on the same server: the
//! transport's own share of the tail and of the CPU.
//! Run: `cargo bench --bench grpc`; `RCFD_BENCH_UNARY_RATE=5000 cargo bench --bench
//! grpc grpc/unary_score` paces the unary calls at a fixed rate instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use rcfd::detector::config::DetectorConfig;
use rcfd::detector::registry::Registry;
use rcfd::service::config::Config;
use rcfd::service::scorer::Scorer;
use rcfd::service::telemetry::Metrics;
use rcfd::service::{run, Listeners};
use rcfd::source::grpc::proto::{self, scoring_client::ScoringClient};
use rcfd::store::embedded::EmbeddedStore;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// 50 trees, sample size 256, shingle 1: the forest of the speed targets (the
/// default detector's sample size is 1024 since 2026-12-04, for NAB accuracy; the
/// ratio to in-process scoring is what this bench is about).
const DETECTOR: &str = "name = \"bench\"\nentity_key = [\"id\"]\nfeatures = [\"v\"]\n[forest]\nsample_size = 256\n";
const ENTITIES: usize = 8;
const BATCH: usize = 1_000;
const WARM_UP_PER_ENTITY: usize = 300;
/// Concurrent clients when finding the unary peak.
const CLIENTS: usize = 4;

fn value(entity: usize, step: usize) -> f64 {
    10.0 + ((step * 7 + entity * 3) % 11) as f64
}

fn records(step: &mut usize) -> Vec<proto::Record> {
    (0..BATCH)
        .map(|i| {
            let entity = i % ENTITIES;
            let record = proto::Record {
                detector: "bench".into(),
                entity: format!("sensor-{entity}"),
                event_time_ms: 1_000_000 + *step as i64,
                values: [("v".to_owned(), value(entity, *step))].into_iter().collect(),
                id: String::new(),
            };
            if entity == ENTITIES - 1 {
                *step += 1;
            }
            record
        })
        .collect()
}

fn in_process(c: &mut Criterion) {
    let detector = DetectorConfig::from_toml(DETECTOR).expect("parses").validate().expect("valid");
    let path = std::env::temp_dir().join(format!("rcfd-bench-grpc-inproc-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let store: Arc<EmbeddedStore> = Arc::new(EmbeddedStore::open(&path).expect("store"));
    // Unlinked once open (the store keeps its handle), so that an interrupted run leaves
    // no file behind.
    let _ = std::fs::remove_file(&path);
    let mut registry = Registry::new(vec![detector.clone()], 1_000, store.clone());
    let names: Vec<String> = (0..ENTITIES).map(|e| format!("sensor-{e}")).collect();
    let mut step = 0;
    let feed = |registry: &mut Registry, n: usize, step: &mut usize| {
        for i in 0..n {
            let entity = i % ENTITIES;
            registry
                .process("bench", &names[entity], 1_000_000 + *step as i64, &[value(entity, *step)], None)
                .expect("scored");
            if entity == ENTITIES - 1 {
                *step += 1;
            }
        }
    };
    feed(&mut registry, WARM_UP_PER_ENTITY * ENTITIES, &mut step);
    let mut group = c.benchmark_group("grpc");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.bench_function("detector_in_process", |b| b.iter(|| feed(&mut registry, BATCH, &mut step)));

    // The same through the service's scorer (events, alerts, live page, metrics), with
    // the deliveries dropped: the cost of the service layer without gRPC and journal.
    let (deliveries, _queued) = rcfd::sink::queue::queue(rcfd::sink::queue::DEFAULT_CAPACITY);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut scored = Registry::new(vec![detector], 1_000, store);
    feed(&mut scored, WARM_UP_PER_ENTITY * ENTITIES, &mut 0);
    let scorer = Scorer::new(scored, threads, Arc::new(Metrics::default()), deliveries);
    group.bench_function("scorer_in_process", |b| {
        b.iter_batched(
            || records(&mut step).into_iter().map(rcfd::source::grpc::convert::record).collect::<Vec<_>>(),
            |batch| {
                let (results, delivery) = scorer.score("bench", batch);
                assert!(results.iter().all(Result::is_ok));
                drop(delivery);
            },
            criterion::BatchSize::SmallInput,
        )
    });

    // One-record calls from two threads at once, each on its own half of the entities,
    // as unary calls from several clients arrive: calls on different entities score at
    // the same time (the registry is held only to lend and give back models).
    let halves: Vec<Vec<rcfd::event::Record>> = (0..2)
        .map(|half| {
            (0..2 * BATCH)
                .filter(|i| (i % ENTITIES < ENTITIES / 2) == (half == 0))
                .map(|i| rcfd::source::grpc::convert::record(one_record(i).records.remove(0)))
                .collect()
        })
        .collect();
    group.throughput(Throughput::Elements(2 * BATCH as u64));
    group.bench_function("scorer_one_record_calls_from_2_threads", |b| {
        b.iter(|| {
            std::thread::scope(|scope| {
                for half in &halves {
                    let scorer = &scorer;
                    scope.spawn(move || {
                        for record in half {
                            let (results, _) = scorer.score("bench", vec![record.clone()]);
                            assert!(results.iter().all(Result::is_ok));
                        }
                    });
                }
            })
        })
    });
    group.finish();
}

struct Running {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    stop: tokio::sync::oneshot::Sender<()>,
    service: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn start() -> Running {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let store = std::env::temp_dir().join(format!("rcfd-bench-grpc-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&store);
    let text = format!("[store]\npath = '{}'\n[http]\nenabled = false\n", store.display());
    let config = Config::from_toml_with_env(&text, Vec::new()).expect("config").validate().expect("valid");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (service, channel) = runtime.block_on(async {
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = grpc.local_addr().expect("address");
        let service = tokio::spawn(run(config, Listeners { grpc, http: None }, async move {
            let _ = stopped.await;
        }));
        let channel =
            Channel::from_shared(format!("http://{address}")).expect("uri").connect().await.expect("connects");
        let created = rcfd::source::grpc::proto::detectors_client::DetectorsClient::new(channel.clone())
            .create_detector(proto::CreateDetectorRequest { config_toml: DETECTOR.into() })
            .await;
        created.expect("detector created");
        // The service has its store open now: unlinked, so that an interrupted run
        // leaves no file behind.
        let _ = std::fs::remove_file(&store);
        (service, channel)
    });
    Running { runtime, channel, stop, service }
}

fn score_batch(c: &mut Criterion, running: &Running) {
    let mut client = ScoringClient::new(running.channel.clone());
    let mut step = 0;
    running.runtime.block_on(async {
        for _ in 0..(WARM_UP_PER_ENTITY * ENTITIES / BATCH) {
            client.score(proto::ScoreRequest { records: records(&mut step) }).await.expect("scored");
        }
    });
    let mut group = c.benchmark_group("grpc");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.bench_function("score_batch_1000_over_loopback", |b| {
        b.iter_batched(
            || records(&mut step),
            |batch| {
                running.runtime.block_on(client.score(proto::ScoreRequest { records: batch })).expect("scored");
            },
            criterion::BatchSize::SmallInput,
        )
    });
    // What a client that keeps two batches in flight gets: while one batch is scored,
    // the other core decodes, encodes and journals the other.
    group.throughput(Throughput::Elements(2 * BATCH as u64));
    let mut second = client.clone();
    group.bench_function("score_batch_1000_two_in_flight", |b| {
        b.iter_batched(
            || (records(&mut step), records(&mut step)),
            |(first_batch, second_batch)| {
                running.runtime.block_on(async {
                    let (a, b) = tokio::join!(
                        client.score(proto::ScoreRequest { records: first_batch }),
                        second.score(proto::ScoreRequest { records: second_batch })
                    );
                    a.expect("scored");
                    b.expect("scored");
                })
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn one_record(step: usize) -> proto::ScoreRequest {
    let entity = step % ENTITIES;
    proto::ScoreRequest {
        records: vec![proto::Record {
            detector: "bench".into(),
            entity: format!("sensor-{entity}"),
            event_time_ms: 100_000_000 + step as i64,
            values: [("v".to_owned(), value(entity, step))].into_iter().collect(),
            id: String::new(),
        }],
    }
}

/// Unary calls per second from `CLIENTS` clients calling back to back for `duration`.
async fn peak_rate(channel: &Channel, duration: Duration) -> f64 {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = ScoringClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut calls = 0usize;
            while Instant::now() < deadline {
                client.score(one_record(c + calls * CLIENTS)).await.expect("scored");
                calls += 1;
            }
            calls
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("client");
    }
    total as f64 / duration.as_secs_f64()
}

/// CPU time this process has used so far, on all its threads (user and system).
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// What a paced run measured: each call's latency and how late it was sent (both in
/// call order), and the process's CPU time per call (client, server, sinks and pacer
/// together): far steadier than a p99 on this shared machine, so the first figure to
/// compare two builds by.
struct Paced {
    latencies: Vec<Duration>,
    late: Vec<Duration>,
    cpu_per_call: Duration,
}

/// Calls started at `rate` per second (open loop: a slow call does not delay the next
/// start). A plain thread paces the starts: tokio's timer has a 1 ms granularity,
/// which would release the calls in bursts of several at once.
fn paced_latencies<F, C>(runtime: &tokio::runtime::Runtime, rate: f64, calls: usize, call: C) -> Paced
where
    C: Fn(usize) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate);
    let cpu = process_cpu();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(calls);
    let mut late = Vec::with_capacity(calls);
    for n in 0..calls {
        let due = start + interval * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        late.push(Instant::now().saturating_duration_since(due));
        let call = call(n);
        tasks.push(runtime.spawn(async move {
            let sent = Instant::now();
            call.await;
            sent.elapsed()
        }));
    }
    let latencies: Vec<Duration> = tasks.into_iter().map(|task| runtime.block_on(task).expect("call")).collect();
    let cpu_per_call = process_cpu().saturating_sub(cpu) / calls.max(1) as u32;
    Paced { latencies, late, cpu_per_call }
}

/// Prints p50/p99/max of the latencies, the CPU time per call, and how faithful the
/// pacer was.
fn report(name: &str, rate: f64, Paced { mut latencies, mut late, cpu_per_call }: Paced) {
    // This machine's sleeping threads wake late (a VM without guest halt polling), and
    // a late pacer sends the overdue calls in a burst that queues at the server. Calls
    // over the 1 ms target right after such a burst are the pacer's doing as much as
    // the service's.
    let (target, burst) = (Duration::from_millis(1), Duration::from_micros(500));
    let slow: Vec<usize> = (0..latencies.len()).filter(|&i| latencies[i] > target).collect();
    let after_burst = slow.iter().filter(|&&i| late[i.saturating_sub(20)..=i].iter().any(|&l| l > burst)).count();
    late.sort();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{name}: at {rate:.0} calls/s ({} calls): p50 {:?}, p99 {:?}, max {:?}; CPU {cpu_per_call:?} a call; pacer late by p50 {:?}, p99 {:?}; {} calls over 1 ms, {after_burst} of them within 20 calls after a send 0.5 ms late",
        latencies.len(),
        at(0.50),
        at(0.99),
        latencies[latencies.len() - 1],
        late[late.len() / 2],
        late[late.len() * 99 / 100],
        slow.len(),
    );
}

/// The environment variable that paces unary calls at a fixed rate (calls per
/// second) instead of half of the peak: a change that raises the peak also raises
/// "half of peak", so two builds compare only at one rate.
const FIXED_RATE: &str = "RCFD_BENCH_UNARY_RATE";

fn unary_latency(running: &Running) {
    let peak = running.runtime.block_on(peak_rate(&running.channel, Duration::from_secs(3)));
    let fixed = std::env::var(FIXED_RATE).ok().map(|v| match v.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => rate,
        _ => panic!("{FIXED_RATE}={v}: calls per second, a number above 0"),
    });
    let rate = fixed.unwrap_or(peak / 2.0);
    let how = if fixed.is_some() { FIXED_RATE } else { "half of peak" };
    println!("grpc/unary_score: peak {peak:.0} calls/s ({CLIENTS} clients); paced at {rate:.0} calls/s ({how}):");
    let calls = (rate * 5.0) as usize;
    let channel = running.channel.clone();
    let paced = paced_latencies(&running.runtime, rate, calls, |n| {
        let mut client = ScoringClient::new(channel.clone());
        async move {
            client.score(one_record(n)).await.expect("scored");
        }
    });
    report("grpc/unary_score", rate, paced);
    // The same calls' transport alone: the health check on the same server, channel and
    // runtime, at the same rate. What Score's tail has beyond this is the service's.
    let paced = paced_latencies(&running.runtime, rate, calls, |_| {
        let mut client = HealthClient::new(channel.clone());
        async move {
            client.check(HealthCheckRequest { service: String::new() }).await.expect("serving");
        }
    });
    report("grpc/unary_health_check (transport only)", rate, paced);
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    in_process(&mut criterion);
    let running = start();
    score_batch(&mut criterion, &running);
    // Criterion's name filter (the first free argument) also selects this report.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_none_or(|f| "grpc/unary_score".contains(f.as_str())) {
        unary_latency(&running);
    }
    let _ = running.stop.send(());
    let _ = running.runtime.block_on(running.service);
    criterion.final_summary();
}
