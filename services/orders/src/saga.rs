//! The end of the saga: the customer service's verdict ships or cancels the order.
//!
//! The inbox record, the status change and the staged `OrderShipped`/`OrderCancelled` commit in
//! one transaction. An order leaves `Created` once: a second verdict for it (another message
//! id) changes nothing and publishes nothing.

use ferry_contracts::orders::{OrderCancelled, OrderShipped, OrderStatus, OrderValidated, TOPIC};
use ferry_toolkit::sql::outbox::{self, RelayWaker};
use ferry_toolkit::sql::{Database, inbox};
use ferry_toolkit::{HandlerError, MessageContext};

use crate::GROUP;
use crate::api::load;

/// Reason recorded when a refusal came without one.
const NO_REASON: &str = "refused by the customer service";

/// Applies one `OrderValidated`, once.
pub(crate) async fn conclude(
    db: &Database,
    relay: &RelayWaker,
    verdict: OrderValidated,
    ctx: &MessageContext,
) -> Result<(), HandlerError> {
    let Some(mut tx) = inbox::claim(db, GROUP, ctx.message_id()).await? else {
        return Ok(());
    };
    let Some(order) = load(&mut tx, &verdict.order_id).await? else {
        // Every verdict answers an order this service published; one for an order it never had
        // cannot become right by retrying.
        return Err(HandlerError::permanent(format!(
            "verdict for unknown order {}",
            verdict.order_id
        )));
    };
    if order.status != OrderStatus::Created {
        tracing::info!(order = %order.id, status = order.status.as_str(), "order already concluded; verdict ignored");
        tx.commit().await?;
        return Ok(());
    }
    let (status, reason) = if verdict.is_valid {
        (OrderStatus::Shipped, None)
    } else {
        let reason = verdict.reason.unwrap_or_else(|| NO_REASON.to_owned());
        (OrderStatus::Cancelled, Some(reason))
    };
    sqlx::query("UPDATE orders SET status = $1, reason = $2 WHERE id = $3 AND status = $4")
        .bind(status.as_str())
        .bind(reason.clone())
        .bind(&order.id)
        .bind(OrderStatus::Created.as_str())
        .execute(&mut *tx)
        .await?;
    match reason {
        None => {
            let event = OrderShipped {
                id: order.id.clone(),
                customer_id: order.customer_id,
                amount: order.amount,
            };
            outbox::enqueue(
                &mut tx,
                TOPIC,
                &event,
                &ctx.follow_up_envelope::<OrderShipped>(),
            )
            .await?;
        }
        Some(reason) => {
            let event = OrderCancelled {
                id: order.id.clone(),
                customer_id: order.customer_id,
                reason,
            };
            outbox::enqueue(
                &mut tx,
                TOPIC,
                &event,
                &ctx.follow_up_envelope::<OrderCancelled>(),
            )
            .await?;
        }
    }
    tx.commit().await?;
    relay.notify();
    tracing::info!(order = %order.id, status = status.as_str(), "order concluded");
    Ok(())
}
