//! `rcfd dashboards install`: posts the NDJSON to OpenSearch Dashboards' saved-objects
//! import API (`POST /api/saved_objects/_import?overwrite=true`, multipart with one
//! `file` part, header `osd-xsrf: true`), then reads the import summary. Building the
//! request and reading the answer are plain functions, tested on canned data; only
//! [`install`] talks to the network.

use base64::Engine;
use serde_json::Value;

/// The import endpoint, relative to the OpenSearch Dashboards URL (base path included).
pub const IMPORT_PATH: &str = "/api/saved_objects/_import?overwrite=true";
/// Multipart boundary; checked not to occur in the file.
const BOUNDARY: &str = "rcfd-saved-objects-4c1f0a9e7d2b";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("--url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("the NDJSON contains the multipart boundary {BOUNDARY:?}")]
    Boundary,
    #[error("could not reach OpenSearch Dashboards at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("OpenSearch Dashboards refused the credentials ({status}): check --user and --password: {body}")]
    Unauthorized { status: u16, body: String },
    #[error(
        "{url} answered {status}; is it OpenSearch Dashboards (not OpenSearch itself), with its base path? {body}"
    )]
    NotDashboards { url: String, status: u16, body: String },
    #[error("the import failed ({status}): {body}")]
    Failed { status: u16, body: String },
    #[error("{count} saved objects were not imported: {}", .errors.join("; "))]
    Objects { count: usize, errors: Vec<String> },
}

/// Basic authentication (the security plugin's internal users, or a proxy).
#[derive(Debug, Clone, PartialEq)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

/// Everything about the request except sending it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The import request for `ndjson`. `tenant` selects a security-plugin tenant
/// (`securitytenant` header, e.g. `global` or `private`).
pub fn import_request(
    dashboards_url: &str,
    ndjson: &str,
    auth: Option<&BasicAuth>,
    tenant: Option<&str>,
) -> Result<ImportRequest, InstallError> {
    let bad = |reason: &str| InstallError::Url { url: dashboards_url.to_owned(), reason: reason.to_owned() };
    let base = dashboards_url.trim_end_matches('/');
    let rest = base.strip_prefix("http://").or_else(|| base.strip_prefix("https://"));
    match rest {
        None => return Err(bad("not an http:// or https:// URL")),
        Some(host) if host.is_empty() || host.starts_with('/') => return Err(bad("no host")),
        Some(host) if host.contains(['?', '#']) => return Err(bad("a query or fragment has no place here")),
        Some(_) => {}
    }
    if ndjson.contains(BOUNDARY) {
        return Err(InstallError::Boundary);
    }
    let mut body = Vec::with_capacity(ndjson.len() + 256);
    body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
    body.extend_from_slice(b"Content-Disposition: form-data; name=\"file\"; filename=\"rcfd.ndjson\"\r\n");
    body.extend_from_slice(b"Content-Type: application/ndjson\r\n\r\n");
    body.extend_from_slice(ndjson.as_bytes());
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let mut headers = vec![
        ("content-type".to_owned(), format!("multipart/form-data; boundary={BOUNDARY}")),
        // Without it OpenSearch Dashboards refuses any write (its CSRF protection).
        ("osd-xsrf".to_owned(), "true".to_owned()),
    ];
    if let Some(auth) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", auth.user, auth.password));
        headers.push(("authorization".to_owned(), format!("Basic {token}")));
    }
    if let Some(tenant) = tenant {
        headers.push(("securitytenant".to_owned(), tenant.to_owned()));
    }
    Ok(ImportRequest { url: format!("{base}{IMPORT_PATH}"), headers, body })
}

/// How many objects were imported.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSummary {
    pub success_count: u64,
}

/// Reads the import API's answer: `{"success": true, "successCount": n}`, or
/// `{"success": false, "errors": [{id, type, error: {type, ...}}]}` per object.
pub fn read_import_response(url: &str, status: u16, body: &str) -> Result<ImportSummary, InstallError> {
    let short = || body.chars().take(500).collect::<String>();
    match status {
        401 | 403 => return Err(InstallError::Unauthorized { status, body: short() }),
        404 | 405 => return Err(InstallError::NotDashboards { url: url.to_owned(), status, body: short() }),
        200..=299 => {}
        // OpenSearch's answer to a path it does not serve: the URL is the cluster's.
        400 if body.contains("no handler found for uri") => {
            return Err(InstallError::NotDashboards { url: url.to_owned(), status, body: short() })
        }
        _ => return Err(InstallError::Failed { status, body: short() }),
    }
    let parsed: Value = serde_json::from_str(body).map_err(|_| InstallError::NotDashboards {
        url: url.to_owned(),
        status,
        body: short(),
    })?;
    let Some(success) = parsed["success"].as_bool() else {
        return Err(InstallError::NotDashboards { url: url.to_owned(), status, body: short() });
    };
    if success {
        return Ok(ImportSummary { success_count: parsed["successCount"].as_u64().unwrap_or(0) });
    }
    let errors: Vec<String> = parsed["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let kind = e["error"]["type"].as_str().unwrap_or("unknown");
                    let detail = match kind {
                        "missing_references" => format!(
                            ": references {}",
                            e["error"]["references"].as_array().map_or(String::new(), |r| r
                                .iter()
                                .map(|r| format!(
                                    "{}/{}",
                                    r["type"].as_str().unwrap_or("?"),
                                    r["id"].as_str().unwrap_or("?")
                                ))
                                .collect::<Vec<_>>()
                                .join(", "))
                        ),
                        _ => e["error"]["message"].as_str().map_or(String::new(), |m| format!(": {m}")),
                    };
                    format!("{}/{} {kind}{detail}", e["type"].as_str().unwrap_or("?"), e["id"].as_str().unwrap_or("?"))
                })
                .collect()
        })
        .unwrap_or_default();
    Err(InstallError::Objects { count: errors.len(), errors })
}

/// Sends the import request and reads the answer.
pub async fn install(request: &ImportRequest) -> Result<ImportSummary, InstallError> {
    let unreachable = |reason: String| InstallError::Unreachable { url: request.url.clone(), reason };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let mut builder = client.post(&request.url).body(request.body.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let response = builder.send().await.map_err(|e| unreachable(format!("{e:#}")))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| unreachable(e.to_string()))?;
    read_import_response(&request.url, status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_one_multipart_file_with_the_xsrf_header() {
        let auth = BasicAuth { user: "admin".into(), password: "s3cret".into() };
        let request = import_request("https://osd.example.com:5601/base/", "{\"a\":1}\n", Some(&auth), Some("global"))
            .expect("request");
        assert_eq!(request.url, "https://osd.example.com:5601/base/api/saved_objects/_import?overwrite=true");
        let header = |name: &str| request.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(header("osd-xsrf"), Some("true"));
        assert_eq!(header("authorization"), Some("Basic YWRtaW46czNjcmV0"));
        assert_eq!(header("securitytenant"), Some("global"));
        let content_type = header("content-type").expect("content type");
        let boundary = content_type.strip_prefix("multipart/form-data; boundary=").expect("multipart");
        let body = String::from_utf8(request.body).expect("utf-8");
        let expected = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"rcfd.ndjson\"\r\n\
             Content-Type: application/ndjson\r\n\r\n{{\"a\":1}}\n\r\n--{boundary}--\r\n"
        );
        assert_eq!(body, expected);

        let anonymous = import_request("http://127.0.0.1:5601", "x", None, None).expect("request");
        assert!(anonymous.headers.iter().all(|(n, _)| n != "authorization" && n != "securitytenant"));
    }

    #[test]
    fn bad_urls_and_files_are_named() {
        for url in ["osd.example.com", "ftp://x", "http://", "http:///x", "http://x/?a=1"] {
            let error = import_request(url, "x", None, None).expect_err(url);
            assert!(error.to_string().contains(url), "{error}");
        }
        assert!(matches!(import_request("http://x", BOUNDARY, None, None), Err(InstallError::Boundary)));
    }

    #[test]
    fn answers_are_read_into_counts_or_named_errors() {
        let url = "http://osd/api/saved_objects/_import?overwrite=true";
        assert_eq!(
            read_import_response(url, 200, r#"{"success":true,"successCount":8}"#).expect("ok"),
            ImportSummary { success_count: 8 }
        );
        // As the import API reports objects it could not import.
        let partial = r#"{"success":false,"successCount":6,"errors":[
            {"id":"rcfd-dashboard","type":"dashboard","title":"x","error":{"type":"missing_references",
             "references":[{"type":"visualization","id":"rcfd-vis-top-entities"}]}},
            {"id":"rcfd-vis-score-histogram","type":"visualization","error":{"type":"unknown","message":"boom"}}]}"#;
        let error = read_import_response(url, 200, partial).expect_err("errors");
        let text = error.to_string();
        assert!(text.contains("2 saved objects were not imported"), "{text}");
        assert!(text
            .contains("dashboard/rcfd-dashboard missing_references: references visualization/rcfd-vis-top-entities"));
        assert!(text.contains("visualization/rcfd-vis-score-histogram unknown: boom"), "{text}");
        let unauthorized = read_import_response(url, 401, "Unauthorized").expect_err("401");
        assert!(unauthorized.to_string().contains("--user"), "{unauthorized}");
        // OpenSearch itself, given by mistake, answers unknown paths like this.
        let opensearch = r#"{"error":"no handler found for uri [/api/saved_objects/_import] and method [POST]"}"#;
        assert!(matches!(
            read_import_response(url, 400, opensearch),
            Err(InstallError::NotDashboards { status: 400, .. })
        ));
        let refused = r#"{"statusCode":400,"error":"Bad Request","message":"Invalid file extension .txt"}"#;
        let error = read_import_response(url, 400, refused).expect_err("400");
        assert!(error.to_string().contains("Invalid file extension"), "{error}");
        assert!(matches!(read_import_response(url, 404, "Not Found"), Err(InstallError::NotDashboards { .. })));
        assert!(matches!(read_import_response(url, 200, "<html>"), Err(InstallError::NotDashboards { .. })));
        assert!(matches!(read_import_response(url, 502, "bad gateway"), Err(InstallError::Failed { status: 502, .. })));
    }
}
