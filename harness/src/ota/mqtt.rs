//! The [`super::wire`] messages on an MQTT broker (rumqttc on tokio): one connection per
//! process, which keeps itself connected. After a broker restart the client reconnects on
//! its own; a broker that kept no session (`session_present: false`) gets the subscriptions
//! again, so a restarted mosquitto without persistence loses nothing but what was in flight —
//! which the attempt and sequence rules of [`super::wire`] make harmless to publish again.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::mpsc;

/// A broker address: `mqtt://HOST:PORT` (port 1883 when left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for BrokerUrl {
    type Err = MqttError;

    fn from_str(s: &str) -> Result<Self, MqttError> {
        let bad = |why: &str| MqttError::Url {
            url: s.to_string(),
            why: why.to_string(),
        };
        let url = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "mqtt" {
            return Err(bad(
                "the scheme must be mqtt:// (TLS brokers are not supported)",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("user info is not supported"));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("only mqtt://HOST:PORT"));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?.to_string();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map_or(host.clone(), str::to_string);
        Ok(BrokerUrl {
            host,
            port: url.port().unwrap_or(1883),
        })
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mqtt://{}:{}", self.host, self.port)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("broker URL {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("the MQTT connection's task has ended")]
    Closed(#[from] rumqttc::ClientError),
    #[error("no connection to {broker} within {waited_ms} ms: {last}")]
    Unreachable {
        broker: BrokerUrl,
        waited_ms: u64,
        last: String,
    },
}

/// What the connection saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A message on a subscribed topic.
    Message { topic: String, payload: Vec<u8> },
    /// (Re)connected; `session_present`: the broker kept the session (its subscriptions).
    Connected { session_present: bool },
    /// The connection broke (it is retried every [`RETRY`]).
    Disconnected(String),
}

/// Pause between reconnection attempts.
pub const RETRY: Duration = Duration::from_millis(200);

/// A connection to a broker with its subscriptions.
#[derive(Debug)]
pub struct Mqtt {
    client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    task: tokio::task::JoinHandle<()>,
}

impl Mqtt {
    /// Connect as `client_id` and subscribe to `topics` (QoS 1); waits up to `wait` for the
    /// first connection. The session is persistent (`clean_session: false`), so a broker that
    /// keeps sessions queues QoS 1 messages for this client while it is away.
    pub async fn connect(
        broker: &BrokerUrl,
        client_id: &str,
        topics: &[String],
        wait: Duration,
    ) -> Result<Mqtt, MqttError> {
        let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_clean_session(false);
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(options, 256);
        let (tx, mut incoming) = mpsc::unbounded_channel();
        let topics = topics.to_vec();
        let resubscribe = client.clone();
        let task = tokio::spawn(async move {
            loop {
                let seen = match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => Incoming::Message {
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                    },
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if !ack.session_present {
                            for t in &topics {
                                // Queued in the client: sent right after this ConnAck.
                                if resubscribe.try_subscribe(t, QoS::AtLeastOnce).is_err() {
                                    return;
                                }
                            }
                        }
                        Incoming::Connected {
                            session_present: ack.session_present,
                        }
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        let gone = tx.send(Incoming::Disconnected(e.to_string())).is_err();
                        if gone {
                            return;
                        }
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        });
        let deadline = tokio::time::Instant::now() + wait;
        let mut last = "no answer".to_string();
        loop {
            match tokio::time::timeout_at(deadline, incoming.recv()).await {
                Ok(Some(Incoming::Connected { .. })) => break,
                Ok(Some(Incoming::Disconnected(e))) => last = e,
                Ok(Some(Incoming::Message { .. })) => {}
                Ok(None) | Err(_) => {
                    task.abort();
                    return Err(MqttError::Unreachable {
                        broker: broker.clone(),
                        waited_ms: wait.as_millis() as u64,
                        last,
                    });
                }
            }
        }
        Ok(Mqtt {
            client,
            incoming,
            task,
        })
    }

    /// Publish `msg` as JSON; QoS 1 ("at least once"), not retained. Queued while the broker
    /// is away and sent when it is back.
    pub async fn publish<T: Serialize>(&self, topic: &str, msg: &T) -> Result<(), MqttError> {
        self.publish_qos(topic, msg, QoS::AtLeastOnce).await
    }

    /// Publish with QoS 0 (heartbeats: a lost one is replaced by the next).
    pub async fn publish_qos<T: Serialize>(
        &self,
        topic: &str,
        msg: &T,
        qos: QoS,
    ) -> Result<(), MqttError> {
        self.client
            .publish(topic, qos, false, super::wire::encode(msg))
            .await?;
        Ok(())
    }

    /// The next thing the connection saw; `None` once it has ended.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.incoming.recv().await
    }

    /// The next message (connection changes skipped), or `None` after `wait`.
    pub async fn next_message(&mut self, wait: Duration) -> Option<(String, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Ok(Some(Incoming::Message { topic, payload })) => return Some((topic, payload)),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Disconnect cleanly.
    pub async fn close(self) {
        let _ = self.client.disconnect().await;
        self.task.abort();
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let u: BrokerUrl = "mqtt://127.0.0.1:1884".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 1884));
        assert_eq!("mqtt://broker".parse::<BrokerUrl>().unwrap().port, 1883);
        assert_eq!("mqtt://[::1]:7".parse::<BrokerUrl>().unwrap().host, "::1");
        for (bad, why) in [
            ("http://h:1", "scheme"),
            ("mqtt://u:p@h:1", "user info"),
            ("mqtt://h:1/x", "only mqtt://HOST:PORT"),
            ("mqtt://h:99999", "invalid port"),
            ("h:1", "scheme"),
        ] {
            let e = bad.parse::<BrokerUrl>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
