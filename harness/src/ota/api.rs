//! The HTTP side of `hil ota serve` (axum): the REST API, the event stream, the portal.
//!
//! | method, path | answer |
//! |---|---|
//! | `POST /jobs` | a manifest (`Content-Type: application/json` or `application/yaml`, at most [`MAX_BODY`] bytes): `201` and the job; `400` bad JSON/YAML, unknown or missing fields; `413` too large; `415` another content type; `422` a value that does not validate; `409` the target has an unfinished job |
//! | `GET /jobs` | `{jobs: [job…], unreadable: [error…]}` |
//! | `GET /jobs/{id}` | the job: the job document (`state`, `history` with times, `attempts`, …) with `phase`, `target`, `progress {bytes, size, blocks}`, `running`, `boot`; `404` unknown |
//! | `POST /jobs/{id}/cancel` | `200` and the cancelled job; `409` too late or finished (see [`super::serve`]); `404` unknown |
//! | `GET /events` | server-sent events: first a `job` event per job (the current state), then a `trace` event per [`super::serve::ServiceEvent`] and a `job` event whenever a job is submitted, ends or is cancelled |
//! | `GET /` | the portal (one page, no external resources) |
//!
//! Every error is JSON: `{"error": "…", …}` with the facts of [`ServeError::body`].

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast;

use super::serve::{BodyFormat, Published, ServeError, Service, parse_manifest};

/// The largest manifest body accepted (a manifest is well under 1 KiB).
pub const MAX_BODY: usize = 64 * 1024;

const PORTAL: &str = include_str!("portal/index.html");

/// The service's routes.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/", get(portal))
        .route("/jobs", post(submit).get(list))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/events", get(events))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(service)
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body())).into_response()
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"error": "no such resource"})),
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(serde_json::json!({"error": "method not allowed here"})),
    )
        .into_response()
}

/// Read at most [`MAX_BODY`] bytes: a larger declared length is refused before reading, a
/// longer body (chunked) once the limit is passed.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ServeError> {
    let too_large = ServeError::TooLarge { limit: MAX_BODY };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large);
    }
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ServeError::TooLarge { limit: MAX_BODY };
            }
            source = s.source();
        }
        ServeError::Body(e.to_string())
    })
}

async fn submit(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ServeError> {
    let format = BodyFormat::of_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("(not text)")),
    )?;
    let bytes = read_body(&headers, body).await?;
    let manifest = parse_manifest(&bytes, format, svc.base())?;
    let view = svc.submit(manifest)?;
    let location = format!("/jobs/{}", view.job.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(view),
    )
        .into_response())
}

async fn list(State(svc): State<Arc<Service>>) -> Result<Response, ServeError> {
    let (jobs, unreadable) = svc.views()?;
    Ok(axum::Json(serde_json::json!({"jobs": jobs, "unreadable": unreadable})).into_response())
}

async fn job(
    State(svc): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Result<Response, ServeError> {
    Ok(axum::Json(svc.view(&id)?).into_response())
}

async fn cancel(
    State(svc): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Result<Response, ServeError> {
    Ok(axum::Json(svc.cancel(&id).await?).into_response())
}

fn sse_of(p: &Published) -> Event {
    let (name, data) = match p {
        Published::Trace(e) => ("trace", serde_json::to_string(&**e)),
        Published::Job(j) => ("job", serde_json::to_string(&**j)),
    };
    let mut event = Event::default()
        .event(name)
        .data(data.unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")));
    if let Published::Trace(e) = p {
        event = event.id(e.seq.to_string());
    }
    event
}

/// The current state of every job, as `job` events.
fn snapshot(svc: &Service) -> Vec<Event> {
    match svc.views() {
        Ok((jobs, _)) => jobs
            .into_iter()
            .map(|j| sse_of(&Published::Job(Arc::new(j))))
            .collect(),
        Err(e) => vec![Event::default().event("error").data(e.body().to_string())],
    }
}

async fn events(
    State(svc): State<Arc<Service>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribed before the snapshot is read: nothing in between is lost (an event may come
    // twice, which the views tolerate: a job event replaces the job).
    let rx = svc.subscribe();
    let first = snapshot(&svc);
    let live = stream::unfold((rx, svc), |(mut rx, svc)| async move {
        let batch = match rx.recv().await {
            Ok(p) => vec![sse_of(&p)],
            // A subscriber too slow for the stream gets the current state again.
            Err(broadcast::error::RecvError::Lagged(_)) => snapshot(&svc),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((stream::iter(batch), (rx, svc)))
    })
    .flatten();
    Sse::new(stream::iter(first).chain(live).map(Ok)).keep_alive(KeepAlive::default())
}

/// The portal, with the current jobs in the page (so that it shows them without a script
/// round trip; the stream keeps it current).
async fn portal(State(svc): State<Arc<Service>>) -> Response {
    let jobs = svc.views().map(|(j, _)| j).unwrap_or_default();
    // `</` never appears inside the script element.
    let data = serde_json::to_string(&jobs)
        .unwrap_or_else(|_| "[]".into())
        .replace("</", "<\\/");
    Html(PORTAL.replace("\"__INITIAL_JOBS__\"", &data)).into_response()
}
