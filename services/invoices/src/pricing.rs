//! What an invoice says, computed from the request alone: validation, the amounts, and the
//! issue time's text form. Pure functions, so the rules are unit-tested without a broker.
//!
//! Amounts are integer cents (as [`Money`] holds them) and are summed in `i128`, so no line
//! can overflow; an invoice whose total would not fit the wire format of [`Money`] (more than
//! 10^13 currency units) is refused rather than rounded.

use std::time::{SystemTime, UNIX_EPOCH};

use ferry_contracts::billing::{GenerateInvoice, LineItem, Money, TAX_RATE_BASIS_POINTS};

/// The largest invoice total, in cents: the most a [`Money`] carries on the wire exactly.
const MAX_TOTAL_CENTS: i128 = 1_000_000_000_000_000;

/// The amounts of a valid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Amounts {
    pub(crate) subtotal: Money,
    pub(crate) tax: Money,
    pub(crate) total: Money,
}

/// The customer as invoices record it: trimmed of surrounding white space.
pub(crate) fn customer(request: &GenerateInvoice) -> &str {
    request.customer.trim()
}

/// Checks `request` and prices it, or says (for `InvoiceRejected.reason`) why it cannot be
/// invoiced. Lines are numbered from 1 in reasons.
pub(crate) fn price(request: &GenerateInvoice) -> Result<Amounts, String> {
    if request.request_id.trim().is_empty() {
        return Err("requestId is required".into());
    }
    if customer(request).is_empty() {
        return Err("customer is required".into());
    }
    if request.items.is_empty() {
        return Err("an invoice needs at least one line item".into());
    }
    let mut subtotal: i128 = 0;
    for (i, item) in request.items.iter().enumerate() {
        let line = i + 1;
        if item.quantity == 0 {
            return Err(format!("line {line}: quantity must be at least 1"));
        }
        if item.unit_price <= Money::from_cents(0) {
            return Err(format!(
                "line {line}: unitPrice must be greater than 0 (got {})",
                item.unit_price
            ));
        }
        subtotal += line_amount(item);
    }
    let tax = tax_cents(subtotal);
    let total = subtotal + tax;
    if total > MAX_TOTAL_CENTS {
        return Err(format!(
            "the invoice total is too large (at most {} units)",
            MAX_TOTAL_CENTS / 100
        ));
    }
    // Each fits: 0 <= subtotal, tax <= total <= 10^15.
    let cents = |c: i128| Money::from_cents(c as i64);
    Ok(Amounts {
        subtotal: cents(subtotal),
        tax: cents(tax),
        total: cents(total),
    })
}

/// `quantity x unitPrice`, in cents.
pub(crate) fn line_amount(item: &LineItem) -> i128 {
    i128::from(item.quantity) * i128::from(item.unit_price.cents())
}

/// The tax on a non-negative `subtotal` (cents): `subtotal x TAX_RATE_BASIS_POINTS / 10_000`,
/// rounded half up to the cent.
fn tax_cents(subtotal: i128) -> i128 {
    (subtotal * i128::from(TAX_RATE_BASIS_POINTS) + 5_000) / 10_000
}

/// `t` as RFC 3339 in UTC with milliseconds: `2025-03-01T09:30:00.250Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let millis = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let (days, ms_of_day) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms_of_day % 1000
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn request(customer: &str, items: &[(u32, i64)]) -> GenerateInvoice {
        GenerateInvoice {
            request_id: "r-1".into(),
            customer: customer.into(),
            items: items
                .iter()
                .map(|&(quantity, cents)| LineItem {
                    description: "thing".into(),
                    quantity,
                    unit_price: Money::from_cents(cents),
                })
                .collect(),
        }
    }

    /// `items` as `(quantity, unit price in cents)` price to `(subtotal, tax, total)` cents.
    #[track_caller]
    fn check(items: &[(u32, i64)], expected: (i64, i64, i64)) {
        let amounts = price(&request("ada", items)).expect("valid");
        assert_eq!(
            (
                amounts.subtotal.cents(),
                amounts.tax.cents(),
                amounts.total.cents()
            ),
            expected
        );
    }

    #[test]
    fn tax_is_twenty_percent_rounded_half_up_to_the_cent() {
        check(&[(1, 1)], (1, 0, 1)); // 0.2 cent -> 0
        check(&[(1, 2)], (2, 0, 2)); // 0.4 -> 0
        check(&[(1, 3)], (3, 1, 4)); // 0.6 -> 1
        check(&[(1, 4)], (4, 1, 5)); // 0.8 -> 1
        check(&[(1, 5)], (5, 1, 6)); // 1.0 -> 1
        check(&[(3, 1999), (2, 250)], (6_497, 1_299, 7_796)); // 1299.4 -> 1299
        check(&[(1, 12_348)], (12_348, 2_470, 14_818)); // 2469.6 -> 2470
        check(
            &[(u32::MAX, 100_000)],
            (429_496_729_500_000, 85_899_345_900_000, 515_396_075_400_000),
        );
    }

    #[track_caller]
    fn check_rejected(request: GenerateInvoice, reason: &str) {
        assert_eq!(price(&request), Err(reason.to_owned()));
    }

    #[test]
    fn invalid_requests_are_refused_with_the_reason() {
        check_rejected(
            request("ada", &[]),
            "an invoice needs at least one line item",
        );
        check_rejected(request("  ", &[(1, 100)]), "customer is required");
        check_rejected(
            request("ada", &[(1, 100), (0, 100)]),
            "line 2: quantity must be at least 1",
        );
        check_rejected(
            request("ada", &[(1, 0)]),
            "line 1: unitPrice must be greater than 0 (got 0.00)",
        );
        check_rejected(
            request("ada", &[(1, -5)]),
            "line 1: unitPrice must be greater than 0 (got -0.05)",
        );
        check_rejected(
            request("ada", &[(u32::MAX, 1_000_000_000_000_000)]),
            "the invoice total is too large (at most 10000000000000 units)",
        );
        let mut blank_id = request("ada", &[(1, 100)]);
        blank_id.request_id = " ".into();
        check_rejected(blank_id, "requestId is required");
    }

    #[test]
    fn issue_times_are_rfc3339_utc() {
        let at = |ms: u64| rfc3339(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_740_821_400_250), "2025-03-01T09:30:00.250Z");
        assert_eq!(at(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
