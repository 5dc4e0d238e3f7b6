//! The node agent's ServiceAccount token cache (`pods::token`) against a real secure API
//! server, as the node (its client certificate: the Node authorizer and NodeRestriction
//! apply): tokens are bound to the pod and reused until due, a due token is replaced, a
//! failed refresh keeps the still-valid token, and a node cannot get tokens for pods bound
//! elsewhere. No containers: the whole-pod path is e2e's `service_account_tokens`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{Backend, Cluster};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use node_agent::node::Writer;
use node_agent::pods::token::Tokens;
use node_agent::Metrics;
use serde_json::json;

async fn client_as(c: &Cluster, user: &str, cert: &pki::CertKey) -> Client {
    let pki = c.pki.as_ref().expect("secure cluster");
    let yaml = pki::kubeconfig(
        &c.url(),
        pki.ca.cert_pem(),
        user,
        pki::Credentials::ClientCert(cert),
    );
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("client config");
    Client::try_from(config).expect("client")
}

async fn node_writer(c: &Cluster, node: &str) -> Writer {
    let pki = c.pki.as_ref().expect("secure cluster");
    let cert = pki.node_client(node).expect("node certificate");
    let client = client_as(c, &format!("system:node:{node}"), &cert).await;
    Writer::new(client, 4, Arc::new(Metrics::new().expect("metrics")))
}

/// Who the API server says the token is, and the pod it is bound to.
async fn review(admin: &Client, token: &str) -> (String, String) {
    let reviews: Api<TokenReview> = Api::all(admin.clone());
    let review = reviews
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_string()),
                    audiences: None,
                },
                ..Default::default()
            },
        )
        .await
        .expect("TokenReview")
        .status
        .expect("status");
    assert_eq!(review.authenticated, Some(true), "{review:?}");
    let user = review.user.expect("user");
    let pod = user
        .extra
        .as_ref()
        .and_then(|e| e.get("authentication.kubernetes.io/pod-name"))
        .and_then(|v| v.first().cloned())
        .unwrap_or_default();
    (user.username.unwrap_or_default(), pod)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_bound_cached_refreshed_and_only_for_own_pods() {
    let cluster = Cluster::start_secure(Backend::Embedded, "").await;
    let pki = cluster.pki.as_ref().expect("secure cluster");
    let admin = client_as(&cluster, "admin", &pki.admin).await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "runner"}})).expect("sa");
    sas.create(&PostParams::default(), &sa)
        .await
        .expect("create service account");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {
            "nodeName": "node-a",
            "serviceAccountName": "runner",
            "automountServiceAccountToken": false,
            "containers": [{"name": "c", "image": "busybox"}],
        },
    }))
    .expect("pod");
    let pod = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");

    let writer = node_writer(&cluster, "node-a").await;
    let tokens = Tokens::default();
    assert_eq!(tokens.next_refresh(), None);
    let asked = Instant::now();
    let first = tokens
        .get(&writer, &pod, None, Some(3600))
        .await
        .expect("a token");
    assert_eq!(
        review(&admin, &first).await,
        ("system:serviceaccount:default:runner".into(), "p".into())
    );
    // Reused until due; due after 80 % of the hour (48 minutes).
    let again = tokens
        .get(&writer, &pod, None, Some(3600))
        .await
        .expect("a token");
    assert_eq!(again, first, "a cached token is reused");
    let due = tokens.next_refresh().expect("a refresh time");
    let after = due.duration_since(asked);
    assert!(
        after > Duration::from_secs(47 * 60) && after <= Duration::from_secs(48 * 60),
        "refresh after {after:?}"
    );
    // Another audience is another token.
    let other = tokens
        .get(&writer, &pod, Some("vault"), Some(3600))
        .await
        .expect("a token for another audience");
    assert_ne!(other, first);

    // Once due, a new one replaces it.
    tokens.mark_due();
    let second = tokens
        .get(&writer, &pod, None, Some(3600))
        .await
        .expect("a refreshed token");
    assert_ne!(second, first, "a due token is replaced");
    assert_eq!(
        review(&admin, &second).await.0,
        "system:serviceaccount:default:runner"
    );

    // A refresh that fails keeps the still-valid token; a pod with nothing cached fails with
    // kubelet's message.
    sas.delete("runner", &DeleteParams::default())
        .await
        .expect("delete service account");
    tokens.mark_due();
    let kept = tokens
        .get(&writer, &pod, None, Some(3600))
        .await
        .expect("the cached token while the refresh fails");
    assert_eq!(kept, second);
    let err = Tokens::default()
        .get(&writer, &pod, None, Some(3600))
        .await
        .expect_err("no service account");
    assert_eq!(
        err,
        r#"failed to fetch token: serviceaccounts "runner" not found"#
    );

    // Another node may not get this pod's tokens (NodeRestriction).
    sas.create(&PostParams::default(), &sa)
        .await
        .expect("recreate service account");
    let stranger = node_writer(&cluster, "node-b").await;
    let err = Tokens::default()
        .get(&stranger, &pod, None, Some(3600))
        .await
        .expect_err("a token for another node's pod");
    assert!(
        err.starts_with("failed to fetch token: ") && err.contains("forbidden"),
        "{err}"
    );
}
