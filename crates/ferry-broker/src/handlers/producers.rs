//! InitProducerId for idempotent producers. Transactions are not implemented, so a
//! transactional id is refused with a fatal error rather than half-supported.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::Reply;
use crate::state::Shared;

pub fn init_producer_id(shared: &Arc<Shared>, req: InitProducerIdRequest) -> Reply {
    let shared = shared.clone();
    Box::pin(async move {
        let resp = InitProducerIdResponse::default();
        if req
            .transactional_id
            .as_ref()
            .is_some_and(|t| !t.0.is_empty())
        {
            return Some(
                resp.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
                    .into(),
            );
        }
        // KIP-360: a producer that already has an id asks for its epoch to be bumped.
        if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
            return Some(
                resp.with_producer_id(req.producer_id)
                    .with_producer_epoch(req.producer_epoch + 1)
                    .into(),
            );
        }
        let ids = shared.producer_ids.clone();
        match tokio::task::spawn_blocking(move || ids.next()).await {
            Ok(Ok(id)) => Some(
                resp.with_producer_id(ProducerId(id))
                    .with_producer_epoch(0)
                    .into(),
            ),
            other => {
                tracing::error!(?other, "cannot allocate a producer id");
                Some(
                    resp.with_error_code(ResponseError::CoordinatorNotAvailable.code())
                        .into(),
                )
            }
        }
    })
}
