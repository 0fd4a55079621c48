//! Apache access log lines in the common (`%h %l %u %t "%r" %>s %b`) and combined
//! (`... "%{Referer}i" "%{User-agent}i"`) formats, one request a line. The entity is the
//! client host by default; with a reference file (`ip,application,contact`) it is the
//! application behind the client IP, so one model learns each application's traffic.
//! The reference file is re-read when it changes, checked at most once a second on the
//! decoding thread: no background thread, and no I/O on the hot path between checks.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{BuildError, DecodeError, Decoded, Decoder};

const FORMAT: &str = "Apache access log";

/// How often, at most, the reference file's modification time is looked at: a `stat` a
/// second costs nothing, and an edit is in use within a second.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What names the entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    /// The client host (`%h`), or its application when a reference file is configured.
    Host,
    /// The authenticated user (`%u`).
    User,
    /// The request's path (from `%r`) without its query string, which would make every
    /// search its own entity.
    Path,
}

/// A feature value, named as written here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// Response size (`%b`); `-` (nothing sent) is 0.
    Bytes,
    /// The final status (`%>s`) as a number.
    Status,
    /// 1 for a server error (status 500 and up), else 0.
    IsError,
    /// 1 for a client error (4xx), else 0.
    IsClientError,
}

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::Bytes => "bytes",
            Feature::Status => "status",
            Feature::IsError => "is_error",
            Feature::IsClientError => "is_client_error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApacheConfig {
    /// What names the entity: `host` (the client), `user` or `path`.
    pub entity: Entity,
    /// Feature values: `bytes`, `status`, `is_error`, `is_client_error`. The default
    /// leaves out `status`: a status code is a label, and the distance from 404 to 500
    /// means nothing to a forest; the two indicators carry it instead.
    pub features: Vec<Feature>,
    /// A CSV file `ip,application,contact` (a header line `ip,...` and `#` comments
    /// allowed, no quoted commas) naming the application behind client IPs. With it,
    /// the entity is the application; IPs it does not list stay themselves. Only with
    /// `entity = "host"`. Re-read when its modification time changes; a broken file keeps
    /// the previous mapping and is logged.
    pub reference_file: Option<PathBuf>,
}

impl Default for ApacheConfig {
    fn default() -> Self {
        ApacheConfig {
            entity: Entity::Host,
            features: vec![Feature::Bytes, Feature::IsError, Feature::IsClientError],
            reference_file: None,
        }
    }
}

pub struct ApacheDecoder {
    config: ApacheConfig,
    applications: Option<ReferenceTable>,
}

impl ApacheDecoder {
    /// Reads the reference file, if any: one that cannot be read at start is an error,
    /// not an empty mapping, so a wrong path is found before any model is keyed by IP.
    pub fn new(config: ApacheConfig) -> Result<Self, BuildError> {
        let applications = match &config.reference_file {
            None => None,
            Some(path) if config.entity != Entity::Host => {
                return Err(BuildError::BadSetting {
                    field: "reference_file",
                    value: path.display().to_string(),
                    allowed: "only with entity = \"host\": the file maps client IPs",
                })
            }
            Some(path) => Some(ReferenceTable::load(path.clone(), Instant::now())?),
        };
        Ok(ApacheDecoder { config, applications })
    }

    /// `decode` at a given instant, which decides whether the reference file is due a check.
    pub fn decode_at(&self, data: &[u8], now: Instant) -> Vec<Result<Decoded, DecodeError>> {
        let applications = self.applications.as_ref().map(|table| table.applications(now));
        super::lines(data)
            .map(|line| match line {
                Ok(line) => self.one(line, applications.as_deref()),
                Err(e) => Err(DecodeError::Malformed { format: FORMAT, reason: e.to_string() }),
            })
            .collect()
    }

    fn one(&self, line: &str, applications: Option<&HashMap<IpAddr, String>>) -> Result<Decoded, DecodeError> {
        let line = AccessLine::parse(line).map_err(|reason| DecodeError::Malformed { format: FORMAT, reason })?;
        let entity = match self.config.entity {
            Entity::Host => {
                let application =
                    applications.zip(line.host.parse::<IpAddr>().ok()).and_then(|(apps, ip)| apps.get(&ip));
                application.cloned().unwrap_or_else(|| line.host.to_owned())
            }
            Entity::User if line.user == "-" => return Err(DecodeError::MissingField { field: "user".into() }),
            Entity::User => line.user.to_owned(),
            Entity::Path => line.path()?.to_owned(),
        };
        let status = match line.status.parse::<u16>() {
            Ok(status) if line.status.len() == 3 && (100..=599).contains(&status) => status,
            _ => return Err(bad("status", line.status, "an HTTP status, 100 to 599")),
        };
        let mut values = BTreeMap::new();
        for &feature in &self.config.features {
            let value = match feature {
                Feature::Bytes => match line.bytes {
                    "-" => 0.0,
                    text if text.bytes().all(|b| b.is_ascii_digit()) => {
                        text.parse::<u64>().map_err(|_| bad("bytes", text, "a whole number or -"))? as f64
                    }
                    text => return Err(bad("bytes", text, "a whole number or -")),
                },
                Feature::Status => f64::from(status),
                Feature::IsError => f64::from(u8::from(status >= 500)),
                Feature::IsClientError => f64::from(u8::from((400..500).contains(&status))),
            };
            values.insert(feature.name().to_owned(), value);
        }
        let event_ms = clf_time_ms(line.time).ok_or_else(|| bad("time", line.time, "dd/Mon/yyyy:hh:mm:ss +hhmm"))?;
        Ok(Decoded { entity, event_ms, values })
    }
}

impl Decoder for ApacheDecoder {
    /// Every line carries its own time (`%t`), so the arrival time is not needed.
    fn decode(&self, data: &[u8], _arrival_ms: i64) -> Vec<Result<Decoded, DecodeError>> {
        self.decode_at(data, Instant::now())
    }
}

/// The fields of one line, borrowed from it.
struct AccessLine<'a> {
    host: &'a str,
    user: &'a str,
    time: &'a str,
    request: &'a str,
    status: &'a str,
    bytes: &'a str,
}

impl<'a> AccessLine<'a> {
    /// The reason is for `Malformed`. What follows `%b` (the combined format's referer
    /// and user agent, or fields a site's `LogFormat` appends) is not used, so not read.
    fn parse(line: &'a str) -> Result<Self, String> {
        let mut rest = line;
        let host = token(&mut rest, "client host (%h)")?;
        let _ident = token(&mut rest, "identity (%l)")?;
        let user = token(&mut rest, "user (%u)")?;
        let time = delimited(&mut rest, '[', ']', "time [%t]")?;
        let request = delimited(&mut rest, '"', '"', "request \"%r\"")?;
        let status = token(&mut rest, "status (%>s)")?;
        let bytes = token(&mut rest, "size (%b)")?;
        Ok(AccessLine { host, user, time, request, status, bytes })
    }

    fn path(&self) -> Result<&'a str, DecodeError> {
        if self.request.is_empty() || self.request == "-" {
            return Err(DecodeError::MissingField { field: "request".into() });
        }
        let mut parts = self.request.split_ascii_whitespace();
        match (parts.next(), parts.next()) {
            (Some(_method), Some(target)) => Ok(target.split(['?', '#']).next().unwrap_or(target)),
            _ => Err(bad("request", self.request, "METHOD path PROTOCOL")),
        }
    }
}

/// The next space-separated field.
fn token<'a>(rest: &mut &'a str, what: &str) -> Result<&'a str, String> {
    let text = rest.trim_start_matches(' ');
    let end = text.find(' ').unwrap_or(text.len());
    if end == 0 {
        return Err(format!("the line ends before the {what}"));
    }
    *rest = &text[end..];
    Ok(&text[..end])
}

/// The next field between `open` and `close`; a backslash escapes the next character,
/// as Apache writes a `"` inside the request.
fn delimited<'a>(rest: &mut &'a str, open: char, close: char, what: &str) -> Result<&'a str, String> {
    let text = rest.trim_start_matches(' ');
    let inner = text.strip_prefix(open).ok_or_else(|| format!("expected the {what} at `{}`", preview(text)))?;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == close => {
                *rest = &inner[i + c.len_utf8()..];
                return Ok(&inner[..i]);
            }
            _ => {}
        }
    }
    Err(format!("the {what} is not closed with {close}"))
}

fn preview(text: &str) -> &str {
    match text.char_indices().nth(20) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

fn bad(field: &str, value: &str, allowed: &str) -> DecodeError {
    let mut shown = value.to_owned();
    if shown.len() > 80 {
        let mut end = 77;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push_str("...");
    }
    DecodeError::BadField { field: field.to_owned(), value: shown, allowed: allowed.to_owned() }
}

/// `%t` without its brackets, `10/Oct/2000:13:55:36 -0700` -> milliseconds since the epoch.
pub fn clf_time_ms(text: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let b = text.as_bytes();
    if b.len() != 26 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[14] != b':' || b[17] != b':' || b[20] != b' '
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        let digits = text.get(r)?;
        digits.bytes().all(|b| b.is_ascii_digit()).then(|| digits.parse::<i64>().ok())?
    };
    let month = MONTHS.iter().position(|m| text.get(3..6) == Some(*m))? as i64 + 1;
    let (day, year) = (num(0..2)?, num(7..11)?);
    let (hour, minute, second) = (num(12..14)?, num(15..17)?, num(18..20)?);
    let sign = match b[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let offset_minutes = sign * (num(22..24)? * 60 + num(24..26)?);
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = crate::calendar::days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 - offset_minutes * 60_000)
}

/// Why the reference file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("reference file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("reference file {}, line {line}: {reason}", path.display())]
    Line { path: PathBuf, line: usize, reason: String },
}

/// Client IP -> application, from the reference file, kept current with it.
pub struct ReferenceTable {
    path: PathBuf,
    state: Mutex<TableState>,
}

struct TableState {
    applications: Arc<HashMap<IpAddr, String>>,
    /// The modification time last looked at; `None` while the file cannot be looked at.
    modified: Option<SystemTime>,
    checked: Instant,
}

impl ReferenceTable {
    pub fn load(path: PathBuf, now: Instant) -> Result<Self, ReferenceError> {
        let modified = modified(&path).map_err(|source| ReferenceError::Read { path: path.clone(), source })?;
        let applications = Arc::new(read(&path)?);
        Ok(ReferenceTable {
            path,
            state: Mutex::new(TableState { applications, modified: Some(modified), checked: now }),
        })
    }

    /// The mapping in force at `now`, re-read first when a check is due and the file
    /// changed. Decoding threads share it: whichever comes first after the interval checks.
    pub fn applications(&self, now: Instant) -> Arc<HashMap<IpAddr, String>> {
        // A panic elsewhere while holding the lock leaves a whole mapping behind (it is
        // only ever replaced whole), so a poisoned lock is still good to use.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(state.checked) >= RELOAD_CHECK_INTERVAL {
            state.checked = now;
            self.reload_if_changed(&mut state);
        }
        Arc::clone(&state.applications)
    }

    fn reload_if_changed(&self, state: &mut TableState) {
        let modified = match modified(&self.path) {
            Ok(modified) => modified,
            Err(error) => {
                // Warned once, not every second, until the file is back.
                if state.modified.take().is_some() {
                    tracing::warn!(path = %self.path.display(), %error, "reference file unreadable; keeping the previous application mapping");
                }
                return;
            }
        };
        if state.modified == Some(modified) {
            return;
        }
        // Remembered even when the new contents are broken, so they are read (and
        // warned about) once, and the next edit is read again.
        state.modified = Some(modified);
        match read(&self.path) {
            Ok(applications) => {
                tracing::info!(path = %self.path.display(), applications = applications.len(), "reference file reloaded");
                state.applications = Arc::new(applications);
            }
            Err(error) => tracing::warn!(%error, "reference file broken; keeping the previous application mapping"),
        }
    }
}

fn modified(path: &Path) -> std::io::Result<SystemTime> {
    std::fs::metadata(path)?.modified()
}

fn read(path: &Path) -> Result<HashMap<IpAddr, String>, ReferenceError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ReferenceError::Read { path: path.to_owned(), source })?;
    parse_reference(&text).map_err(|(line, reason)| ReferenceError::Line { path: path.to_owned(), line, reason })
}

/// `ip,application,contact` lines -> the mapping, or the line number and what is wrong.
fn parse_reference(text: &str) -> Result<HashMap<IpAddr, String>, (usize, String)> {
    let mut applications = HashMap::new();
    let mut listed_on = HashMap::new();
    let mut first = true;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut columns = line.split(',').map(|column| column.trim().trim_matches('"').trim());
        let (ip, application) = (columns.next().unwrap_or_default(), columns.next().unwrap_or_default());
        if std::mem::take(&mut first) && ip.eq_ignore_ascii_case("ip") {
            continue;
        }
        let ip: IpAddr = ip.parse().map_err(|_| (number, format!("`{ip}` is not an IP address")))?;
        if application.is_empty() {
            return Err((number, format!("no application for {ip}")));
        }
        if let Some(previous) = listed_on.insert(ip, number) {
            return Err((number, format!("{ip} is listed on line {previous} too")));
        }
        applications.insert(ip, application.to_owned());
    }
    Ok(applications)
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;

    use super::*;

    const COMBINED: &str = r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#;
    const COMMON_404: &str = r#"192.168.2.20 - - [28/Jul/2006:10:27:10 -0300] "GET /cgi-bin/try/?q=1 HTTP/1.0" 404 -"#;
    const SERVER_ERROR: &str =
        r#"10.1.4.7 - alice [07/Mar/2004:16:10:02 +0000] "POST /api/orders?id=7 HTTP/1.1" 503 341 "-" "curl/8.5.0""#;

    fn decoder(config: ApacheConfig) -> ApacheDecoder {
        ApacheDecoder::new(config).expect("builds")
    }

    #[test]
    fn combined_and_common_lines_decode_with_the_defaults() {
        let decoded = decoder(ApacheConfig::default())
            .decode(format!("{COMBINED}\n{COMMON_404}\n{SERVER_ERROR}\n").as_bytes(), 0);
        let decoded: Vec<Decoded> = decoded.into_iter().map(|r| r.expect("decodes")).collect();
        assert_eq!(
            decoded[0],
            Decoded {
                entity: "127.0.0.1".into(),
                event_ms: 971_211_336_000,
                values: BTreeMap::from([
                    ("bytes".into(), 2326.0),
                    ("is_client_error".into(), 0.0),
                    ("is_error".into(), 0.0)
                ]),
            }
        );
        assert_eq!(
            decoded[1].values,
            BTreeMap::from([("bytes".into(), 0.0), ("is_client_error".into(), 1.0), ("is_error".into(), 0.0)])
        );
        assert_eq!(decoded[1].event_ms, 1_154_093_230_000);
        assert_eq!((decoded[2].values["is_error"], decoded[2].values["is_client_error"]), (1.0, 0.0));
    }

    #[test]
    fn entity_and_features_follow_the_config() {
        let config: ApacheConfig = toml::from_str(
            r#"
            entity = "path"
            features = ["status", "bytes"]
            "#,
        )
        .expect("parses");
        let d = decoder(config).decode(SERVER_ERROR.as_bytes(), 0).remove(0).expect("decodes");
        assert_eq!(d.entity, "/api/orders");
        assert_eq!(d.values, BTreeMap::from([("bytes".into(), 341.0), ("status".into(), 503.0)]));
        let by_user = decoder(ApacheConfig { entity: Entity::User, ..ApacheConfig::default() });
        assert_eq!(by_user.decode(SERVER_ERROR.as_bytes(), 0).remove(0).map(|d| d.entity), Ok("alice".into()));
        assert_eq!(
            by_user.decode(COMMON_404.as_bytes(), 0).remove(0),
            Err(DecodeError::MissingField { field: "user".into() })
        );
    }

    #[test]
    fn bad_lines_name_what_is_wrong() {
        let err = |text: &str| {
            decoder(ApacheConfig::default()).decode(text.as_bytes(), 0).remove(0).expect_err("refused").to_string()
        };
        assert_eq!(err("127.0.0.1 - frank"), "not valid Apache access log: expected the time [%t] at ``");
        assert_eq!(
            err(r#"127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0 200 5"#),
            "not valid Apache access log: the request \"%r\" is not closed with \""
        );
        assert_eq!(err(&COMBINED.replace(" 200 ", " OK ")), "field `status` = OK: an HTTP status, 100 to 599");
        assert_eq!(err(&COMBINED.replace(" 2326 ", " 2kB ")), "field `bytes` = 2kB: a whole number or -");
        assert_eq!(
            err(&COMBINED.replace("Oct", "Okt")),
            "field `time` = 10/Okt/2000:13:55:36 -0700: dd/Mon/yyyy:hh:mm:ss +hhmm"
        );
        let by_path = decoder(ApacheConfig { entity: Entity::Path, ..ApacheConfig::default() });
        let probe = r#"203.0.113.9 - - [10/Oct/2000:13:55:36 -0700] "\x16\x03\x01" 400 226"#;
        assert_eq!(
            by_path.decode(probe.as_bytes(), 0).remove(0).expect_err("refused").to_string(),
            "field `request` = \\x16\\x03\\x01: METHOD path PROTOCOL"
        );
        let quoted = r#"203.0.113.9 - - [10/Oct/2000:13:55:36 -0700] "GET /a\"b HTTP/1.1" 200 1"#;
        assert_eq!(by_path.decode(quoted.as_bytes(), 0).remove(0).map(|d| d.entity), Ok("/a\\\"b".into()));
        assert_eq!(clf_time_ms("01/Jan/1970:01:00:00 +0100"), Some(0));
    }

    fn write(path: &Path, text: &str, modified: SystemTime) {
        let mut file = File::create(path).expect("temp file");
        file.write_all(text.as_bytes()).expect("written");
        // Set, not left to the clock: two writes within one tick of a coarse file system
        // clock would otherwise look unchanged.
        file.set_modified(modified).expect("mtime set");
    }

    #[test]
    fn the_reference_file_maps_ips_to_applications_and_is_reloaded_when_it_changes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("applications.csv");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        write(&path, "ip,application,contact\n127.0.0.1,billing,billing-oncall@example.com\n# the batch hosts\n10.1.4.7,\"orders\",\n", t);
        let config = ApacheConfig { reference_file: Some(path.clone()), ..ApacheConfig::default() };
        let decoder = decoder(config);
        let start = Instant::now();
        let entities = |at: Duration| -> Vec<String> {
            let text = format!("{COMBINED}\n{SERVER_ERROR}\n{COMMON_404}");
            decoder.decode_at(text.as_bytes(), start + at).into_iter().map(|r| r.expect("decodes").entity).collect()
        };
        assert_eq!(entities(Duration::ZERO), ["billing", "orders", "192.168.2.20"]);

        write(&path, "127.0.0.1,billing-v2,\n192.168.2.20,legacy,\n", t + Duration::from_secs(10));
        assert_eq!(
            entities(Duration::from_millis(500)),
            ["billing", "orders", "192.168.2.20"],
            "not checked before a second has passed"
        );
        assert_eq!(entities(Duration::from_millis(1500)), ["billing-v2", "10.1.4.7", "legacy"]);

        write(&path, "127.0.0.1,billing-v3\nnot-an-ip,whatever\n", t + Duration::from_secs(20));
        assert_eq!(
            entities(Duration::from_millis(2600)),
            ["billing-v2", "10.1.4.7", "legacy"],
            "a broken file keeps the previous mapping"
        );

        std::fs::remove_file(&path).expect("removed");
        assert_eq!(
            entities(Duration::from_millis(3700)),
            ["billing-v2", "10.1.4.7", "legacy"],
            "so does a missing one"
        );

        write(&path, "127.0.0.1,billing-v3\n", t + Duration::from_secs(30));
        assert_eq!(entities(Duration::from_millis(4800)), ["billing-v3", "10.1.4.7", "192.168.2.20"]);
    }

    #[test]
    fn a_reference_file_that_cannot_be_used_at_start_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("applications.csv");
        let build = |config: ApacheConfig| ApacheDecoder::new(config).err().map(|e| e.to_string()).unwrap_or_default();
        let config = ApacheConfig { reference_file: Some(path.clone()), ..ApacheConfig::default() };
        assert!(build(config.clone()).starts_with(&format!("reference file {}: ", path.display())));
        write(&path, "ip,application\n10.0.0.1,a\n10.0.0.1,b\n", SystemTime::now());
        assert_eq!(
            build(config.clone()),
            format!("reference file {}, line 3: 10.0.0.1 is listed on line 2 too", path.display())
        );
        write(&path, "10.0.0.1,\n", SystemTime::now());
        assert_eq!(
            build(config.clone()),
            format!("reference file {}, line 1: no application for 10.0.0.1", path.display())
        );
        let by_user = ApacheConfig { entity: Entity::User, ..config };
        assert_eq!(
            build(by_user),
            format!(
                "decoder setting `reference_file` = {}: only with entity = \"host\": the file maps client IPs",
                path.display()
            )
        );
    }
}
