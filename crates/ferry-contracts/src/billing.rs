//! Billing: the dashboard asks the invoice generator for invoices and the score calculator for
//! credit scores, each over its own pair of topics.
//!
//! - [`GenerateInvoice`] on [`GENERATE_INVOICE`] -> the invoice generator answers
//!   [`InvoiceGenerated`] (or [`InvoiceRejected`]) on [`INVOICE_GENERATED`];
//! - [`CalculateScore`] on [`CALCULATE_SCORE`] -> the score calculator answers
//!   [`ScoreCalculated`] on [`SCORE_CALCULATED`]. It learns each customer's invoice history
//!   from [`INVOICE_GENERATED`].
//!
//! Every request carries a `requestId`, which is also the envelope's correlation id; the answer
//! repeats it in its payload and keeps the request's correlation id in its envelope (with the
//! request's message id as causation id), so the page that asked can pick its answer out of the
//! live stream. A request is idempotent per `requestId`: sending it again (or the broker
//! redelivering it) answers again with the first answer (the same invoice number, the same
//! score), never a second invoice. Requests and answers are keyed by customer, so one
//! customer's invoices and scores stay in order.
//!
//! Money is [`Money`] (integer cents, at most two decimals on the wire), as in orders.

use ferry_toolkit::Message;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::orders::Money;

/// Requests for invoices.
pub const GENERATE_INVOICE: &str = "generate-invoice";
/// Generated (or rejected) invoices.
pub const INVOICE_GENERATED: &str = "invoice-generated";
/// Requests for scores.
pub const CALCULATE_SCORE: &str = "calculate-score";
/// Calculated scores.
pub const SCORE_CALCULATED: &str = "score-calculated";

/// The tax rate every invoice applies, in basis points (20.00%).
pub const TAX_RATE_BASIS_POINTS: i64 = 2_000;

/// One line of an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    /// What was sold.
    pub description: String,
    /// How many (at least 1).
    pub quantity: u32,
    /// The price of one (positive).
    pub unit_price: Money,
}

/// Please invoice `customer` for `items`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerateInvoice {
    /// The request's id (a UUID; also the correlation id).
    pub request_id: String,
    /// Who is invoiced (not blank; surrounding white space is dropped).
    pub customer: String,
    /// What for (at least one line).
    pub items: Vec<LineItem>,
}

impl Message for GenerateInvoice {
    ferry_toolkit::schema_from_schemars!();
    const TYPE: &'static str = "GenerateInvoice";
    fn key(&self) -> String {
        self.customer.clone()
    }
}

/// An invoice was issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceGenerated {
    /// The request it answers.
    pub request_id: String,
    /// The invoice number: 1, 2, 3, ... with no gaps and no duplicates.
    pub number: i64,
    /// Who is invoiced.
    pub customer: String,
    /// The lines, as requested.
    pub items: Vec<LineItem>,
    /// Sum of quantity x unit price.
    pub subtotal: Money,
    /// `subtotal` x [`TAX_RATE_BASIS_POINTS`], rounded half up to the cent.
    pub tax: Money,
    /// `subtotal + tax`.
    pub total: Money,
    /// When it was issued (RFC 3339, UTC).
    pub issued_at: String,
}

impl Message for InvoiceGenerated {
    ferry_toolkit::schema_from_schemars!();
    const TYPE: &'static str = "InvoiceGenerated";
    fn key(&self) -> String {
        self.customer.clone()
    }
}

/// A request could not be invoiced (no lines, a zero quantity, a non-positive price, no
/// customer); the reason says which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceRejected {
    /// The request it answers.
    pub request_id: String,
    /// Who asked to be invoiced.
    pub customer: String,
    /// Why not.
    pub reason: String,
}

impl Message for InvoiceRejected {
    ferry_toolkit::schema_from_schemars!();
    const TYPE: &'static str = "InvoiceRejected";
    fn key(&self) -> String {
        self.customer.clone()
    }
}

/// Please score `customer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CalculateScore {
    /// The request's id (a UUID; also the correlation id).
    pub request_id: String,
    /// Who is scored.
    pub customer: String,
}

impl Message for CalculateScore {
    ferry_toolkit::schema_from_schemars!();
    const TYPE: &'static str = "CalculateScore";
    fn key(&self) -> String {
        self.customer.clone()
    }
}

/// A customer's score, from the invoices the score calculator has seen for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScoreCalculated {
    /// The request it answers.
    pub request_id: String,
    /// Who was scored.
    pub customer: String,
    /// The score: `min(1000, 300 + 40 x invoices + floor(totalBilled / 100 units))`, as the
    /// score calculator documents it. The same history always gives the same score.
    pub score: i64,
    /// How many invoices it was computed from.
    pub invoices: i64,
    /// Their total (each invoice's `total`, tax included).
    pub total_billed: Money,
}

impl Message for ScoreCalculated {
    ferry_toolkit::schema_from_schemars!();
    const TYPE: &'static str = "ScoreCalculated";
    fn key(&self) -> String {
        self.customer.clone()
    }
}
