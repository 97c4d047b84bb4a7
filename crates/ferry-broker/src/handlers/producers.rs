//! InitProducerId: a fresh producer id for an idempotent producer, or, with a transactional id,
//! the transaction coordinator's producer id and (bumped) epoch for it.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::Reply;
use super::txn::{detached, txn_error};
use crate::state::Shared;
use crate::txn::TxnCoordinator;

pub fn init_producer_id(shared: &Arc<Shared>, req: InitProducerIdRequest, version: i16) -> Reply {
    let shared = shared.clone();
    if let Some(transactional_id) = req.transactional_id {
        // KIP-360: a client re-initialising names the id and epoch it had.
        let expected = (req.producer_id.0 >= 0 && req.producer_epoch >= 0)
            .then_some((req.producer_id.0, req.producer_epoch));
        return detached(async move {
            let result = TxnCoordinator::init_producer_id(
                &shared,
                transactional_id.0.as_str(),
                req.transaction_timeout_ms,
                expected,
            )
            .await;
            let resp = InitProducerIdResponse::default();
            match result {
                Ok((id, epoch)) => resp
                    .with_producer_id(ProducerId(id))
                    .with_producer_epoch(epoch)
                    .into(),
                Err(e) => resp
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_error_code(txn_error(e, version >= 4).code())
                    .into(),
            }
        });
    }
    Box::pin(async move {
        let resp = InitProducerIdResponse::default();
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
