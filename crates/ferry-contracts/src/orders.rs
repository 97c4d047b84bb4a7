//! Orders and customers: the credit-check saga on topic `ReactiveMicroservices`.
//!
//! The customer service publishes [`CustomerCreated`] and [`CreditLimitChanged`] and answers
//! each [`OrderCreated`] with an [`OrderValidated`] after it reserved (or refused) the credit;
//! the order service publishes [`OrderCreated`] and, once validated, [`OrderShipped`] or
//! [`OrderCancelled`]. Type names are the original's event names; field names are the
//! original's in camelCase. Customer events are keyed by customer id, order events by order id,
//! so one entity's events stay in order.
//!
//! Money is a [`Money`]: integer cents in the services and their databases (no binary floating
//! point in sums), a JSON number with at most two decimals on the wire, as the original's
//! `decimal` was.

use std::fmt;

use ferry_toolkit::Message;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The topic (the original system's name for it).
pub const TOPIC: &str = "ReactiveMicroservices";

/// An amount of money in cents. On the wire it is a JSON number of currency units with at most
/// two decimals (`12.5` is 1250 cents); a number with more decimals, or beyond ±10^13 units, is
/// refused when decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

/// The largest amount accepted on the wire, in currency units: well inside the range where an
/// `f64` holds every cent exactly.
const MAX_UNITS: f64 = 1e13;

impl Money {
    /// An amount of `cents`.
    pub const fn from_cents(cents: i64) -> Money {
        Money(cents)
    }

    /// The amount in cents.
    pub const fn cents(self) -> i64 {
        self.0
    }

    /// Converts a number of currency units, refusing more than two decimals, non-finite
    /// numbers and amounts beyond ±10^13 units.
    pub fn from_units(units: f64) -> Result<Money, String> {
        if !units.is_finite() || units.abs() > MAX_UNITS {
            return Err(format!("{units} is not an amount of money"));
        }
        let cents = (units * 100.0).round();
        if (cents - units * 100.0).abs() > 1e-6 {
            return Err(format!("{units} has more than two decimals"));
        }
        // In range: |cents| <= 10^15 < 2^53, so the cast is exact.
        Ok(Money(cents as i64))
    }

    /// The amount in currency units (exact for every amount [`Money::from_units`] accepts).
    pub fn units(self) -> f64 {
        self.0 as f64 / 100.0
    }
}

impl fmt::Display for Money {
    /// `12.50`, `-0.05`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

/// On the wire a JSON number of currency units (see [`Money`]); the two-decimal rule is left to
/// decoding, since `multipleOf: 0.01` is not exact in binary floating point.
impl JsonSchema for Money {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Money".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "number",
            "minimum": -MAX_UNITS,
            "maximum": MAX_UNITS,
            "description": "An amount of money in currency units, at most two decimals."
        })
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Whole amounts as integers (`60`, not `60.0`), as the original's decimals looked.
        if self.0 % 100 == 0 {
            serializer.serialize_i64(self.0 / 100)
        } else {
            serializer.serialize_f64(self.units())
        }
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Money, D::Error> {
        let units = f64::deserialize(deserializer)?;
        Money::from_units(units).map_err(serde::de::Error::custom)
    }
}

/// A customer was registered with a credit limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerCreated {
    /// The customer id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The most credit the customer's orders may hold at once.
    pub credit_limit: Money,
}

impl Message for CustomerCreated {
    ferry_toolkit::schema_from_schemars!();
    const TYPE: &'static str = "CustomerCreated";
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// A customer's credit limit was set to a new value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreditLimitChanged {
    /// The customer id.
    pub customer_id: String,
    /// The new limit.
    pub credit_limit: Money,
}

impl Message for CreditLimitChanged {
    ferry_toolkit::schema_from_schemars!();
    const TYPE: &'static str = "CreditLimitChanged";
    fn key(&self) -> String {
        self.customer_id.clone()
    }
}

/// An order's status, as the order service keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OrderStatus {
    /// Placed, waiting for the credit check.
    Created,
    /// Credit reserved; the order ships.
    Shipped,
    /// Refused; the order carries the reason.
    Cancelled,
}

impl OrderStatus {
    /// The name as JSON and the database show it.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "Created",
            OrderStatus::Shipped => "Shipped",
            OrderStatus::Cancelled => "Cancelled",
        }
    }

    /// The status called `name`, if any.
    pub fn parse(name: &str) -> Option<OrderStatus> {
        [
            OrderStatus::Created,
            OrderStatus::Shipped,
            OrderStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// An order was placed; the customer service checks and reserves its credit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    /// The order id.
    pub id: String,
    /// Who ordered.
    pub customer_id: String,
    /// How much credit it needs (positive).
    pub amount: Money,
    /// Always [`OrderStatus::Created`].
    pub status: OrderStatus,
}

impl Message for OrderCreated {
    ferry_toolkit::schema_from_schemars!();
    const TYPE: &'static str = "OrderCreated";
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// The outcome of an order's credit check. When `is_valid` the credit has been reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderValidated {
    /// The order id.
    pub order_id: String,
    /// Whether the credit was reserved.
    pub is_valid: bool,
    /// Why not (`None` when valid), e.g. "unknown customer".
    pub reason: Option<String>,
}

impl Message for OrderValidated {
    ferry_toolkit::schema_from_schemars!();
    const TYPE: &'static str = "OrderValidated";
    fn key(&self) -> String {
        self.order_id.clone()
    }
}

/// A validated order ships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderShipped {
    /// The order id.
    pub id: String,
    /// Who ordered.
    pub customer_id: String,
    /// The amount reserved for it.
    pub amount: Money,
}

impl Message for OrderShipped {
    ferry_toolkit::schema_from_schemars!();
    const TYPE: &'static str = "OrderShipped";
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// A refused order is cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled {
    /// The order id.
    pub id: String,
    /// Who ordered.
    pub customer_id: String,
    /// Why the customer service refused it.
    pub reason: String,
}

impl Message for OrderCancelled {
    ferry_toolkit::schema_from_schemars!();
    const TYPE: &'static str = "OrderCancelled";
    fn key(&self) -> String {
        self.id.clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[track_caller]
    fn check_money(wire: serde_json::Value, expected: Result<i64, &str>) {
        let got = serde_json::from_value::<Money>(wire)
            .map(Money::cents)
            .map_err(|e| e.to_string());
        match expected {
            Ok(cents) => {
                assert_eq!(got, Ok(cents));
                let back = serde_json::to_value(Money::from_cents(cents)).unwrap();
                assert_eq!(
                    serde_json::from_value::<Money>(back).unwrap().cents(),
                    cents
                );
            }
            Err(fragment) => assert!(
                got.as_ref().is_err_and(|e| e.contains(fragment)),
                "{got:?} should fail with {fragment:?}"
            ),
        }
    }

    #[test]
    fn money_is_cents_inside_and_a_decimal_number_on_the_wire() {
        check_money(json!(60), Ok(6000));
        check_money(json!(12.5), Ok(1250));
        check_money(json!(0.1), Ok(10));
        check_money(json!(19.99), Ok(1999));
        check_money(json!(-3), Ok(-300));
        check_money(json!(0), Ok(0));
        check_money(json!(1.005), Err("more than two decimals"));
        check_money(json!(1e20), Err("not an amount"));
        check_money(json!("12"), Err("invalid type"));
        assert_eq!(
            serde_json::to_value(Money::from_cents(6000)).unwrap(),
            json!(60)
        );
        assert_eq!(
            serde_json::to_value(Money::from_cents(1999)).unwrap(),
            json!(19.99)
        );
        assert_eq!(Money::from_cents(-5).to_string(), "-0.05");
        assert_eq!(Money::from_cents(12345).to_string(), "123.45");
    }

    #[test]
    fn wire_format_uses_the_originals_names_in_camel_case() {
        let created = OrderCreated {
            id: "o1".into(),
            customer_id: "c1".into(),
            amount: Money::from_cents(6000),
            status: OrderStatus::Created,
        };
        assert_eq!(
            serde_json::to_value(&created).unwrap(),
            json!({"id": "o1", "customerId": "c1", "amount": 60, "status": "Created"})
        );
        let validated = OrderValidated {
            order_id: "o1".into(),
            is_valid: false,
            reason: Some("unknown customer".into()),
        };
        assert_eq!(
            serde_json::to_value(&validated).unwrap(),
            json!({"orderId": "o1", "isValid": false, "reason": "unknown customer"})
        );
        let changed = CreditLimitChanged {
            customer_id: "c1".into(),
            credit_limit: Money::from_cents(25050),
        };
        assert_eq!(
            serde_json::to_value(&changed).unwrap(),
            json!({"customerId": "c1", "creditLimit": 250.5})
        );
        assert_eq!(OrderStatus::parse("Shipped"), Some(OrderStatus::Shipped));
        assert_eq!(OrderStatus::parse("shipped"), None);
    }
}
