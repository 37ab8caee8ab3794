//! The admin port: health, readiness, metrics that move with traffic, the CA certificate and
//! the recent events.

mod common;

use common::stack::Stack;

async fn get(stack: &Stack, path: &str) -> (u16, String, String) {
    let admin = stack.proxy.admin.expect("the proxy logs its admin address");
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{admin}{path}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn health_readiness_and_the_ca_certificate_are_served() {
    let stack = Stack::start(&[]);
    assert_eq!(get(&stack, "/healthz").await.0, 200);
    assert_eq!(get(&stack, "/readyz").await.0, 200);
    let (status, content_type, pem) = get(&stack, "/ca.pem").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/x-pem-file");
    assert_eq!(pem, std::fs::read_to_string(stack.proxy.ca_pem()).unwrap());
    assert!(!pem.contains("PRIVATE KEY"));
    assert_eq!(get(&stack, "/ca-key.pem").await.0, 404);
}

#[tokio::test]
async fn metrics_parse_as_openmetrics_and_move_with_traffic() {
    let stack = Stack::start(&[]);
    let (_, content_type, before) = get(&stack, "/metrics").await;
    assert!(content_type.starts_with("application/openmetrics-text"));
    assert!(before.ends_with("# EOF\n"));
    let answer = stack
        .token(
            "login.salesforce.com",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "3MVG9cc"),
                ("client_secret", "cc-secret"),
            ],
        )
        .await;
    assert_eq!(answer.status, 400);
    let ok = stack
        .token(
            "acme.my.salesforce.com",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "3MVG9cc"),
                ("client_secret", "cc-secret"),
            ],
        )
        .await;
    assert_eq!(ok.status, 200);
    let (_, _, after) = get(&stack, "/metrics").await;
    for line in after.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "not a sample line: {line}");
    }
    assert_eq!(
        metric(
            &after,
            "grantdoctor_diagnoses_total{cause=\"sf.cc.wrong_domain\"}"
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "grantdoctor_token_exchanges_total{grant_type=\"client_credentials\",outcome=\"error\"}"
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "grantdoctor_token_exchanges_total{grant_type=\"client_credentials\",outcome=\"success\"}"
        ),
        1.0,
        "{after}"
    );
    assert!(
        metric(&after, "grantdoctor_connections_total{mode=\"intercept\"}") >= 1.0,
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "grantdoctor_requests_total{host_class=\"login\",status=\"4xx\"}"
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "grantdoctor_requests_total{host_class=\"my_domain\",status=\"2xx\"}"
        ),
        1.0,
        "{after}"
    );
}

#[tokio::test]
async fn recent_events_are_listed_newest_first() {
    let stack = Stack::start(&[]);
    stack
        .token(
            "login.salesforce.com",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "3MVG9cc"),
                ("client_secret", "cc-secret"),
            ],
        )
        .await;
    stack
        .token(
            "acme.my.salesforce.com",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "3MVG9cc"),
                ("client_secret", "cc-secret"),
            ],
        )
        .await;
    let (status, _, body) = get(&stack, "/events?limit=1").await;
    assert_eq!(status, 200);
    let events: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "token_issued");
    let (_, _, body) = get(&stack, "/events").await;
    let events: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(events[1]["event"], "invalid_grant");
    assert_eq!(events[1]["cause"], "sf.cc.wrong_domain");
    assert!(!body.contains("cc-secret"));
}
