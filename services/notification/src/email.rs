//! E-mail over SMTP (lettre, tokio, rustls): a text and an HTML part per
//! event type, to the address the customer registered.

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use saga_common::events::{OrderEvent, OrderEventType};

use crate::dispatch::Outcome;
use crate::store::Claimed;

/// The longest e-mail address accepted (RFC 5321's path limit).
pub const MAX_ADDRESS_LEN: usize = 254;

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// `smtp://host:port` (plain), `smtp://host:port?tls=required`
    /// (STARTTLS) or `smtps://host:port`; `Err` names the bad setting.
    pub fn new(url: &str, from: &str, timeout: std::time::Duration) -> Result<Mailer, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("invalid SMTP_URL: {e}"))?
            .timeout(Some(timeout))
            .build();
        let from = from.parse().map_err(|e| format!("invalid SMTP_FROM: {e}"))?;
        Ok(Mailer { transport, from })
    }

    pub async fn send(&self, delivery: &Claimed) -> Outcome {
        let failed =
            |error: String| Outcome { succeeded: false, status_code: None, error: Some(error), response_excerpt: None };
        let event = match serde_json::from_str::<Body>(&delivery.body) {
            Ok(body) => body.data,
            Err(error) => return failed(format!("unreadable event: {error}")),
        };
        let to = match delivery.target.parse::<Mailbox>() {
            Ok(to) => to,
            Err(error) => return failed(format!("invalid address: {error}")),
        };
        let rendered = render(&event);
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(format!("<{}@notification.saga>", delivery.id)))
            .multipart(MultiPart::alternative_plain_html(rendered.text, rendered.html));
        let message = match message {
            Ok(message) => message,
            Err(error) => return failed(format!("cannot build the message: {error}")),
        };
        match self.transport.send(message).await {
            Ok(response) => Outcome {
                succeeded: true,
                status_code: Some(i32::from(u16::from(response.code()))),
                error: None,
                response_excerpt: Some(response.message().collect::<Vec<_>>().join(" ")),
            },
            Err(error) => Outcome {
                succeeded: false,
                status_code: error.status().map(|code| i32::from(u16::from(code))),
                error: Some(format!("SMTP: {error}")),
                response_excerpt: None,
            },
        }
    }
}

/// The webhook body, which e-mail deliveries share: `{type, timestamp, data}`.
#[derive(serde::Deserialize)]
struct Body {
    data: OrderEvent,
}

pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn money(cents: Option<i64>) -> String {
    match cents {
        Some(cents) => format!("{}.{:02}", cents / 100, (cents % 100).abs()),
        None => "not priced".to_owned(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The subject, text and HTML of an event's e-mail.
pub fn render(event: &OrderEvent) -> Rendered {
    let order = event.order_id;
    let total = money(event.total_cents);
    let reason = event.failure_reason.map(|r| r.as_str().replace('_', " "));
    let (subject, sentence) = match event.event_type {
        OrderEventType::Completed => (
            format!("Your order {order} is complete"),
            "Good news: your order is complete. It is paid and on its way.".to_owned(),
        ),
        OrderEventType::Failed => (
            format!("Your order {order} could not be completed"),
            format!(
                "We are sorry: your order could not be completed ({}). Nothing was charged, or the charge was refunded.",
                reason.as_deref().unwrap_or("unknown reason")
            ),
        ),
        OrderEventType::Cancelled => (
            format!("Your order {order} is cancelled"),
            "Your order is cancelled. Any payment has been refunded.".to_owned(),
        ),
    };
    let mut text = format!("Hello {},\n\n{sentence}\n\nOrder: {order}\nTotal: {total}\n", event.customer_id);
    if let Some(reason) = &reason {
        text.push_str(&format!("Reason: {reason}\n"));
    }
    text.push_str(&format!("Date: {}\n\n-- Saga Platform\n", event.occurred_at.to_rfc3339()));
    let mut html = format!(
        "<!DOCTYPE html><html><body><p>Hello {},</p><p>{}</p><table>\
         <tr><th align=\"left\">Order</th><td>{order}</td></tr>\
         <tr><th align=\"left\">Total</th><td>{}</td></tr>",
        escape(&event.customer_id),
        escape(&sentence),
        escape(&total)
    );
    if let Some(reason) = &reason {
        html.push_str(&format!("<tr><th align=\"left\">Reason</th><td>{}</td></tr>", escape(reason)));
    }
    html.push_str(&format!(
        "<tr><th align=\"left\">Date</th><td>{}</td></tr></table><p>&mdash; Saga Platform</p></body></html>",
        escape(&event.occurred_at.to_rfc3339())
    ));
    Rendered { subject, text, html }
}

/// Checks an address a customer registers.
pub fn check_address(address: &str) -> Result<(), String> {
    if address.len() > MAX_ADDRESS_LEN {
        return Err(format!("address must be at most {MAX_ADDRESS_LEN} characters"));
    }
    address.parse::<lettre::Address>().map(|_| ()).map_err(|e| format!("address is not a valid e-mail address: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use saga_common::contracts::FailureReason;

    fn event(event_type: OrderEventType) -> OrderEvent {
        OrderEvent {
            schema_version: 1,
            event_id: uuid::Uuid::nil(),
            event_type,
            order_id: uuid::Uuid::nil(),
            customer_id: "alice<b>".into(),
            total_cents: Some(12_345),
            failure_reason: (event_type == OrderEventType::Failed).then_some(FailureReason::OutOfStock),
            order_created_at: chrono::Utc::now(),
            occurred_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn each_event_type_has_its_sentence_total_and_reason() {
        let failed = render(&event(OrderEventType::Failed));
        assert!(failed.subject.contains("could not be completed"));
        assert!(failed.text.contains("Total: 123.45") && failed.text.contains("Reason: out of stock"));
        assert!(failed.html.contains("alice&lt;b&gt;") && !failed.html.contains("<b>"));
        assert!(render(&event(OrderEventType::Completed)).subject.contains("is complete"));
        assert!(!render(&event(OrderEventType::Cancelled)).text.contains("Reason"));
    }

    #[test]
    fn addresses_are_checked() {
        assert!(check_address("alice@example.com").is_ok());
        assert!(check_address("not an address").is_err());
        assert!(check_address(&format!("{}@example.com", "a".repeat(260))).is_err());
    }
}
