//! ApiVersions: the list in `versions::SUPPORTED`.
//!
//! No supported or finalized features are sent: the crate writes a tagged field only when it
//! differs from its default, as Apache Kafka does, which librdkafka before 2.2 needs (it
//! mis-skips tagged fields and fails with "Protocol read buffer underflow").

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::api_versions_response::ApiVersion;

use crate::versions::SUPPORTED;

pub fn handle(error: Option<ResponseError>) -> ApiVersionsResponse {
    let api_keys = SUPPORTED
        .iter()
        .map(|s| {
            ApiVersion::default()
                .with_api_key(s.key as i16)
                .with_min_version(s.min)
                .with_max_version(s.max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error.map_or(0, |e| e.code()))
        .with_api_keys(api_keys)
}
