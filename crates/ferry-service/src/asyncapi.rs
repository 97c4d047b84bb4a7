//! The service's AsyncAPI 3.0 document (`/asyncapi.json`): the topics it sends to and receives
//! from, and a JSON Schema per message type.
//!
//! What a service receives comes from its routers ([`crate::Runtime::start_router`] records
//! each subscribed topic with the router's message types), so that half cannot drift from the
//! code; what it sends it declares with [`crate::Runtime::sends`], next to the code that stages
//! the messages. Payload schemas are [`Message::json_schema`] (draft-07, the dialect of AsyncAPI
//! schemas); their `definitions` are hoisted into `components/schemas` so every `$ref` resolves
//! inside the one document. Headers are the CloudEvents binary-mode attributes of
//! [`ferry_toolkit::header`].

use std::collections::BTreeMap;

use ferry_toolkit::{Message, Router, header};
use serde_json::{Map, Value, json};

/// One topic's messages, by direction.
#[derive(Debug, Default, Clone)]
struct Channel {
    sends: BTreeMap<&'static str, Option<Value>>,
    receives: BTreeMap<&'static str, Option<Value>>,
}

/// The AsyncAPI description of one service, built while the service starts.
#[derive(Debug, Clone)]
pub struct AsyncApi {
    service: &'static str,
    channels: BTreeMap<String, Channel>,
}

impl AsyncApi {
    /// An empty description of `service`.
    pub fn new(service: &'static str) -> AsyncApi {
        AsyncApi {
            service,
            channels: BTreeMap::new(),
        }
    }

    /// Records that the service sends `M` to `topic`.
    pub fn sends<M: Message>(&mut self, topic: &str) {
        self.channel(topic).sends.insert(M::TYPE, M::json_schema());
    }

    /// Records what `router` receives: each of its message types on each of its topics.
    pub fn receives(&mut self, router: &Router) {
        for topic in router.topics() {
            for (type_name, schema) in router.message_types() {
                self.channel(topic).receives.insert(type_name, schema);
            }
        }
    }

    /// The topics it names, sorted.
    pub fn topics(&self) -> Vec<&str> {
        self.channels.keys().map(String::as_str).collect()
    }

    fn channel(&mut self, topic: &str) -> &mut Channel {
        self.channels.entry(topic.to_owned()).or_default()
    }

    /// The AsyncAPI 3.0 document.
    pub fn document(&self) -> Value {
        let mut channels = Map::new();
        let mut operations = Map::new();
        let mut messages = Map::new();
        let mut schemas = Map::new();
        schemas.insert("CloudEventHeaders".into(), cloudevent_headers());
        for (index, (topic, channel)) in self.channels.iter().enumerate() {
            // Topic names may hold characters an AsyncAPI key may not; the address keeps the name.
            let channel_id = format!("{}-{index}", key(topic));
            let mut channel_messages = Map::new();
            let all = channel.sends.iter().chain(channel.receives.iter());
            for (&type_name, schema) in all {
                let message_id = key(type_name);
                channel_messages.insert(
                    message_id.clone(),
                    json!({ "$ref": format!("#/components/messages/{message_id}") }),
                );
                messages
                    .entry(message_id)
                    .or_insert_with(|| message(type_name, schema.as_ref(), &mut schemas));
            }
            channels.insert(
                channel_id.clone(),
                json!({
                    "address": topic,
                    "title": topic,
                    "messages": channel_messages,
                }),
            );
            for (action, types) in [("send", &channel.sends), ("receive", &channel.receives)] {
                if types.is_empty() {
                    continue;
                }
                let refs: Vec<Value> = types
                    .keys()
                    .map(|t| json!({ "$ref": format!("#/channels/{channel_id}/messages/{}", key(t)) }))
                    .collect();
                operations.insert(
                    format!("{action}-{channel_id}"),
                    json!({
                        "action": action,
                        "channel": { "$ref": format!("#/channels/{channel_id}") },
                        "messages": refs,
                    }),
                );
            }
        }
        json!({
            "asyncapi": "3.0.0",
            "info": {
                "title": self.service,
                "version": env!("CARGO_PKG_VERSION"),
                "description": format!(
                    "The topics {} sends to and receives from. Messages are CloudEvents in the Kafka binding's binary mode (ce_* headers, JSON payload keyed by entity id); structured mode and plain messages are read too.",
                    self.service
                ),
            },
            "defaultContentType": "application/json",
            "channels": channels,
            "operations": operations,
            "components": {
                "messages": messages,
                "schemas": schemas,
            },
        })
    }
}

/// A message object; its payload schema's definitions go to `schemas`.
fn message(type_name: &str, schema: Option<&Value>, schemas: &mut Map<String, Value>) -> Value {
    let payload = match schema {
        Some(schema) => hoist(schema.clone(), schemas),
        // A type without a schema: any JSON.
        None => json!({}),
    };
    json!({
        "name": type_name,
        "title": type_name,
        "contentType": "application/json",
        "headers": { "$ref": "#/components/schemas/CloudEventHeaders" },
        "payload": payload,
    })
}

/// Moves a draft-07 schema's `definitions` into `schemas` and points its `$ref`s there.
fn hoist(mut schema: Value, schemas: &mut Map<String, Value>) -> Value {
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
        if let Some(Value::Object(definitions)) = object.remove("definitions") {
            for (name, definition) in definitions {
                let definition = rewrite_refs(definition);
                schemas.entry(name).or_insert(definition);
            }
        }
    }
    rewrite_refs(schema)
}

fn rewrite_refs(value: Value) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .into_iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        let r = match r.strip_prefix("#/definitions/") {
                            Some(name) => format!("#/components/schemas/{name}"),
                            None => r,
                        };
                        (k, Value::String(r))
                    }
                    (_, v) => (k, rewrite_refs(v)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(rewrite_refs).collect()),
        other => other,
    }
}

/// A name usable as an AsyncAPI map key (`^[\w\d.\-_]+$`).
fn key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The envelope's headers as a schema.
fn cloudevent_headers() -> Value {
    let text = |description: &str| json!({ "type": "string", "description": description });
    json!({
        "type": "object",
        "description": "CloudEvents 1.0 attributes in the Kafka protocol binding's binary content mode.",
        "properties": {
            (header::SPEC_VERSION): { "type": "string", "const": "1.0" },
            (header::MESSAGE_ID): text("the event id (a UUID v7 for Ferry's own messages)"),
            (header::SOURCE): text("the sending service, /ferry/<service>"),
            (header::TYPE): text("the message type: the name of this message"),
            (header::TIME): { "type": "string", "format": "date-time" },
            (header::CONTENT_TYPE): { "type": "string", "const": "application/json" },
            (header::VERSION): text("extension: the payload's schema version, decimal"),
            (header::CORRELATION_ID): text("extension: the flow's correlation id (UUID)"),
            (header::CAUSATION_ID): text("extension: the id of the message that caused this one (UUID)"),
            (header::CE_TRACEPARENT): text("distributed-tracing extension: W3C traceparent"),
            (header::TRACEPARENT): text("W3C traceparent, for tracing instrumentations"),
            (header::REPLY_TO): text("extension, requests only: the topic of the reply"),
            (header::STREAM_VERSION): text("extension, event-sourced events only: the version in the stream"),
        },
        "required": [header::SPEC_VERSION, header::MESSAGE_ID, header::SOURCE, header::TYPE],
    })
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, schemars::JsonSchema)]
    struct Placed {
        id: String,
        amount: Amount,
    }

    #[derive(Serialize, Deserialize, schemars::JsonSchema)]
    struct Amount(u32);

    impl Message for Placed {
        ferry_toolkit::schema_from_schemars!();
        const TYPE: &'static str = "shop.placed";
        fn key(&self) -> String {
            self.id.clone()
        }
    }

    #[test]
    fn sends_and_receives_become_channels_operations_and_resolvable_schemas() {
        let mut api = AsyncApi::new("shop");
        api.sends::<Placed>("orders");
        api.receives(
            &Router::new("g")
                .subscribe("payments")
                .handle(ferry_toolkit::handler_fn(
                    |_: Placed, _: ferry_toolkit::MessageContext| async {
                        Ok::<_, ferry_toolkit::HandlerError>(())
                    },
                )),
        );
        assert_eq!(api.topics(), ["orders", "payments"]);
        let doc = api.document();
        assert_eq!(doc["asyncapi"], "3.0.0");
        assert_eq!(doc["channels"]["orders-0"]["address"], "orders");
        assert_eq!(doc["operations"]["send-orders-0"]["action"], "send");
        assert_eq!(doc["operations"]["receive-payments-1"]["action"], "receive");
        let payload = &doc["components"]["messages"]["shop.placed"]["payload"];
        assert_eq!(
            payload["properties"]["amount"]["$ref"],
            "#/components/schemas/Amount"
        );
        assert_eq!(doc["components"]["schemas"]["Amount"]["type"], "integer");
        // Every $ref in the document points at something in it.
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"#/").skip(1) {
            let path = reference.split('"').next().unwrap();
            let target = path
                .split('/')
                .fold(&doc, |node, part| &node[part.replace("~1", "/")]);
            assert!(!target.is_null(), "dangling $ref #/{path}");
        }
    }
}
