//! Email: the notification as plain text, through the configured SMTP
//! server with STARTTLS required (lettre), to the route's recipients. The
//! Message-ID is the alert's id, so a mail client or list can drop a
//! repeat.

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::alerts::Smtp;

/// Sends the notification (`body`, its JSON) to `to`.
pub async fn send(smtp: &Smtp, to: &[&str], body: &str) -> Result<(), String> {
    let n: serde_json::Value =
        serde_json::from_str(body).map_err(|_| "a stored notification is not JSON".to_owned())?;
    let (subject, text) = render(&n);
    let mut message = Message::builder()
        .from(
            smtp.from
                .parse()
                .map_err(|_| "alerts.smtp.from is not an address")?,
        )
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    if let Some(id) = n["id"].as_str() {
        message = message.message_id(Some(format!("<{id}@alertrelay>")));
    }
    for address in to {
        message = message.to(address
            .parse()
            .map_err(|_| "a recipient is not an address".to_owned())?);
    }
    let message = message
        .body(text)
        .map_err(|e| format!("cannot build the mail: {e}"))?;
    transport(smtp)?
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP: {e}"))
}

/// The SMTP transport: STARTTLS required, trusting `ca` too when given.
fn transport(smtp: &Smtp) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let mut tls = TlsParameters::builder(smtp.server.clone());
    if let Some(ca) = &smtp.ca {
        let pem = std::fs::read(ca).map_err(|e| format!("SMTP CA file: {e}"))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| format!("SMTP CA file: {e}"))?;
        tls = tls.add_root_certificate(cert);
    }
    let tls = tls.build_rustls().map_err(|e| format!("SMTP TLS: {e}"))?;
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.server)
        .port(smtp.port)
        .tls(Tls::Required(tls))
        .timeout(Some(super::SEND_TIMEOUT));
    if let (Some(user), Some(file)) = (&smtp.username, &smtp.password_file) {
        crate::crypto::signing::check_private_file(file)
            .map_err(|_| "SMTP password file is unreadable or not mode 0600".to_owned())?;
        let password =
            std::fs::read_to_string(file).map_err(|e| format!("SMTP password file: {e}"))?;
        builder = builder.credentials(Credentials::new(user.clone(), password.trim().to_owned()));
    }
    Ok(builder.build())
}

/// Subject and text of a notification.
pub fn render(n: &serde_json::Value) -> (String, String) {
    let s = |k: &str| n[k].as_str().unwrap_or_default().to_owned();
    let subject = format!(
        "[alertrelay {}] {}: {}",
        s("node"),
        s("severity").to_uppercase(),
        s("title")
    );
    let mut text = format!(
        "{}\n\nEvent:    {}\nSeverity: {}\nNode:     {}\nRaised:   {}\n",
        s("title"),
        s("event"),
        s("severity"),
        s("node"),
        s("raised_at")
    );
    if let Some(facts) = n["facts"].as_object() {
        text.push('\n');
        for (k, v) in facts {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "-".into(),
                other => other.to_string(),
            };
            text.push_str(&format!("{k}: {v}\n"));
        }
    }
    if let Some(link) = n["console_link"].as_str() {
        text.push_str(&format!("\nOpen the case: {link}\n"));
    }
    if let Some(urls) = n["urls"].as_array() {
        text.push_str("\nReported URLs (this route includes them):\n");
        for u in urls {
            text.push_str(&format!("  {}\n", u.as_str().unwrap_or_default()));
        }
    }
    text.push_str(&format!("\nAlert id: {}\n", s("id")));
    (subject, text)
}
