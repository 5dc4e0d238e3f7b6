//! The secure configuration as a user meets it with the real kubectl: TLS with client
//! certificates, static and ServiceAccount tokens, RBAC with the default roles, escalation
//! prevention, the Node authorizer with NodeRestriction, and PodSecurity.

use std::time::{Duration, Instant};

use e2e::{Backend, Cluster, Run};

const TOKENS: &str = "alice-token,alice,1001\nbob-token,bob,1002,\"devs,qa\"\n";

/// Retries `check` until it holds (the authorizers follow RBAC objects and pods through the
/// watch cache, so a grant is visible a moment after the write returns).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

fn unauthorized(run: &Run) -> bool {
    !run.ok
        && run
            .stderr
            .contains("You must be logged in to the server (Unauthorized)")
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_with_kubectl_over_tls() {
    let cluster = Cluster::start_secure(Backend::Embedded, TOKENS).await;
    tokio::task::spawn_blocking(move || {
        // The admin: a client certificate in system:masters.
        cluster.must(&["get", "namespaces"]);
        let whoami = cluster.must(&["auth", "whoami"]);
        assert!(whoami.contains("kubernetes-admin") && whoami.contains("system:masters"), "{whoami}");
        let roles = cluster.must(&["get", "clusterroles", "-o", "name"]);
        for role in ["cluster-admin", "admin", "edit", "view", "system:kube-scheduler", "system:node"] {
            assert!(roles.contains(&format!("clusterrole.rbac.authorization.k8s.io/{role}\n")), "{role} missing:\n{roles}");
        }

        // alice: a static token, no grants.
        let alice = cluster.user_kubeconfig("alice", pki::Credentials::Token("alice-token"));
        let whoami = cluster.kubectl_as(&alice, &["auth", "whoami"]);
        assert!(whoami.ok && whoami.stdout.contains("alice") && whoami.stdout.contains("system:authenticated"), "{whoami:?}");
        let denied = cluster.kubectl_as(&alice, &["get", "pods"]);
        assert!(!denied.ok);
        assert!(
            denied.stderr.contains(r#"Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default""#),
            "{denied:?}"
        );
        let can = cluster.kubectl_as(&alice, &["auth", "can-i", "create", "pods"]);
        assert_eq!((can.ok, can.stdout.trim()), (false, "no"), "{can:?}");

        // Impersonation: the admin may act as alice (and then gets alice's answers); alice may
        // not act as anyone.
        let as_alice = cluster.kubectl(&["auth", "can-i", "create", "pods", "--as=alice"]);
        assert_eq!(as_alice.stdout.trim(), "no", "{as_alice:?}");
        let as_alice = cluster.kubectl(&["get", "pods", "--as=alice"]);
        assert!(as_alice.stderr.contains(r#"User "alice" cannot list resource "pods""#), "{as_alice:?}");
        let whoami = cluster.must(&["auth", "whoami", "--as=alice", "--as-group=devs"]);
        assert!(whoami.contains("alice") && whoami.contains("devs"), "{whoami}");
        let sneaky = cluster.kubectl_as(&alice, &["get", "pods", "--as=bob"]);
        assert!(
            sneaky.stderr.contains(r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#),
            "{sneaky:?}"
        );

        // Granting `edit` in default (an aggregated role) lets alice work there, not elsewhere.
        cluster.must(&["create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice", "-n", "default"]);
        eventually("alice may create deployments", || {
            cluster.kubectl_as(&alice, &["auth", "can-i", "create", "deployments.apps"]).stdout.trim() == "yes"
        });
        let created = cluster.kubectl_as(&alice, &["create", "configmap", "notes", "--from-literal=a=b"]);
        assert!(created.ok, "{created:?}");
        let elsewhere = cluster.kubectl_as(&alice, &["get", "pods", "-n", "kube-system"]);
        assert!(!elsewhere.ok && elsewhere.stderr.contains(r#"in the namespace "kube-system""#), "{elsewhere:?}");
        let secrets = cluster.kubectl_as(&alice, &["auth", "can-i", "get", "secrets"]);
        assert_eq!(secrets.stdout.trim(), "yes", "edit may read secrets: {secrets:?}");
        let list = cluster.kubectl_as(&alice, &["auth", "can-i", "--list"]);
        assert!(list.ok && list.stdout.contains("deployments.apps") && list.stdout.contains("configmaps"), "{list:?}");
        let rbac = cluster.kubectl_as(&alice, &["auth", "can-i", "create", "rolebindings"]);
        assert_eq!(rbac.stdout.trim(), "no", "edit does not manage RBAC: {rbac:?}");

        // bob (group devs) is an `admin` of default: he may grant what he holds, not more.
        cluster.must(&["create", "rolebinding", "devs-admin", "--clusterrole=admin", "--group=devs", "-n", "default"]);
        let bob = cluster.user_kubeconfig("bob", pki::Credentials::Token("bob-token"));
        eventually("bob may create rolebindings", || {
            cluster.kubectl_as(&bob, &["auth", "can-i", "create", "rolebindings"]).stdout.trim() == "yes"
        });
        let view = cluster.kubectl_as(&bob, &["create", "rolebinding", "carol-view", "--clusterrole=view", "--user=carol"]);
        assert!(view.ok, "{view:?}");
        let escalate = cluster.kubectl_as(&bob, &["create", "rolebinding", "bob-root", "--clusterrole=cluster-admin", "--user=bob"]);
        assert!(!escalate.ok);
        assert!(
            escalate.stderr.contains("is attempting to grant RBAC permissions not currently held"),
            "{escalate:?}"
        );

        // A ClusterRole of the admin's own, aggregated into from labelled roles.
        let aggregated = cluster.dir().join("aggregated.yaml");
        std::fs::write(
            &aggregated,
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: monitoring\naggregationRule:\n  clusterRoleSelectors:\n  - matchLabels:\n      example.com/aggregate-to-monitoring: \"true\"\nrules: []\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: monitoring-endpoints\n  labels:\n    example.com/aggregate-to-monitoring: \"true\"\nrules:\n- apiGroups: [\"\"]\n  resources: [endpoints]\n  verbs: [get, list, watch]\n",
        )
        .expect("write");
        cluster.must(&["create", "-f", aggregated.to_str().expect("utf-8")]);
        eventually("monitoring aggregates monitoring-endpoints", || {
            cluster
                .kubectl(&["get", "clusterrole", "monitoring", "-o", "jsonpath={.rules[0].resources[0]}"])
                .stdout
                == "endpoints"
        });

        // Bad credentials are 401, never a crash.
        let garbage = cluster.user_kubeconfig("mallory", pki::Credentials::Token("not-a-token"));
        assert!(unauthorized(&cluster.kubectl_as(&garbage, &["get", "pods"])));
        let pki = cluster.pki.as_ref().expect("secure");
        let foreign_ca = pki::Ca::generate("someone-else").expect("CA");
        let foreign = foreign_ca
            .issue_client("kubernetes-admin", &["system:masters".into()], Duration::from_secs(3600))
            .expect("cert");
        let foreign = cluster.user_kubeconfig("foreign", pki::Credentials::ClientCert(&foreign));
        assert!(unauthorized(&cluster.kubectl_as(&foreign, &["get", "pods"])), "a certificate from another CA");
        let day = Duration::from_secs(86_400);
        let expired = pki
            .ca
            .issue_client_with_validity(
                "kubernetes-admin",
                &["system:masters".into()],
                std::time::SystemTime::now() - 3 * day,
                std::time::SystemTime::now() - day,
            )
            .expect("cert");
        let expired = cluster.user_kubeconfig("expired", pki::Credentials::ClientCert(&expired));
        assert!(unauthorized(&cluster.kubectl_as(&expired, &["get", "pods"])), "an expired certificate");
        // Without credentials (basic auth is not an authenticator here, so the request is
        // anonymous): /version only.
        let anonymous = cluster.dir().join("kubeconfig-anonymous");
        let ca = cluster.dir().join("pki").join("ca.crt");
        std::fs::write(
            &anonymous,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: nobody\ncurrent-context: c\nusers:\n- name: nobody\n  user:\n    username: nobody\n    password: nothing\n",
                cluster.url(),
                ca.display()
            ),
        )
        .expect("write");
        let version = cluster.kubectl_as(&anonymous, &["version", "-o", "json"]);
        assert!(version.stdout.contains("serverVersion"), "{version:?}");
        assert!(unauthorized(&cluster.kubectl_as(&anonymous, &["get", "pods"])));

        // The audit log (default policy: Metadata) recorded the grant, the refusal and the
        // denied escalation, with the decision; no request or response bodies.
        let log = std::fs::read_to_string(cluster.dir().join("audit.log")).expect("audit log");
        let events: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON event a line"))
            .collect();
        let find = |pred: &dyn Fn(&serde_json::Value) -> bool| events.iter().find(|e| pred(e)).cloned();
        let grant = find(&|e| {
            e["stage"] == "ResponseComplete"
                && e["verb"] == "create"
                && e["objectRef"]["resource"] == "rolebindings"
                && e["user"]["username"] == "kubernetes-admin"
                && e["responseStatus"]["code"] == 201
        })
        .unwrap_or_else(|| {
            let related: Vec<_> = log.lines().filter(|l| l.contains("rolebindings")).collect();
            panic!("the admin's rolebinding create is audited:\n{}", related.join("\n"))
        });
        assert_eq!(grant["kind"], "Event");
        assert_eq!(grant["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(grant["level"], "Metadata");
        assert_eq!(grant["annotations"]["authorization.k8s.io/decision"], "allow");
        assert!(grant.get("requestObject").is_none(), "Metadata level records no body");
        let refused = find(&|e| {
            e["user"]["username"] == "alice"
                && e["verb"] == "list"
                && e["responseStatus"]["code"] == 403
        })
        .expect("alice's refused list is audited");
        assert_eq!(refused["annotations"]["authorization.k8s.io/decision"], "forbid");
        assert!(find(&|e| e["user"]["username"] == "bob" && e["responseStatus"]["code"] == 403
            && e["objectRef"]["resource"] == "rolebindings").is_some(), "the escalation attempt");
        assert!(!log.contains("alice-token") && !log.contains("bob-token"), "no credentials in the log");
    })
    .await
    .expect("test body");
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_are_restricted_to_their_own_objects() {
    let cluster = Cluster::start_secure(Backend::Embedded, "").await;
    tokio::task::spawn_blocking(move || {
        let pki = cluster.pki.as_ref().expect("secure");
        let cert = pki.node_client("node-a").expect("node cert");
        let node_a = cluster.user_kubeconfig("system:node:node-a", pki::Credentials::ClientCert(&cert));
        let node = |name: &str| format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n");
        // A node registers itself...
        let path = cluster.dir().join("node-a.yaml");
        std::fs::write(&path, node("node-a")).expect("write");
        let created = cluster.kubectl_as(&node_a, &["create", "-f", path.to_str().expect("utf-8")]);
        assert!(created.ok, "{created:?}");
        // ...but may not touch another node.
        let path_b = cluster.dir().join("node-b.yaml");
        std::fs::write(&path_b, node("node-b")).expect("write");
        cluster.must(&["create", "-f", path_b.to_str().expect("utf-8")]);
        let other = cluster.kubectl_as(&node_a, &["label", "node", "node-b", "stolen=yes"]);
        assert!(!other.ok && other.stderr.contains("Forbidden"), "{other:?}");
        assert!(other.stderr.contains(r#"node "node-a" is not allowed to modify node "node-b""#), "{other:?}");
        let mine = cluster.kubectl_as(&node_a, &["label", "node", "node-a", "zone=a"]);
        assert!(mine.ok, "{mine:?}");

        // Secrets: only those a pod bound to the node uses.
        cluster.must(&["create", "secret", "generic", "used", "--from-literal=k=v"]);
        cluster.must(&["create", "secret", "generic", "unused", "--from-literal=k=v"]);
        let pod = cluster.dir().join("pod.yaml");
        std::fs::write(
            &pod,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\nspec:\n  nodeName: node-a\n  containers:\n  - name: c\n    image: busybox\n    envFrom:\n    - secretRef:\n        name: used\n",
        )
        .expect("write");
        // Without a controller manager nobody made the `default` account the pod runs as.
        let missing = cluster.kubectl(&["create", "-f", pod.to_str().expect("utf-8")]);
        assert!(
            !missing.ok && missing.stderr.contains(r#"error looking up service account default/default: serviceaccount "default" not found"#),
            "{missing:?}"
        );
        cluster.must(&["create", "serviceaccount", "default"]);
        cluster.must(&["create", "-f", pod.to_str().expect("utf-8")]);
        // The ServiceAccount admission gave it an identity: the projected token volume.
        let spec = cluster.must(&["get", "pod", "app", "-o", "jsonpath={.spec.serviceAccountName} {.spec.volumes[0].name} {.spec.containers[0].volumeMounts[0].mountPath}"]);
        let fields: Vec<&str> = spec.split(' ').collect();
        assert_eq!(fields[0], "default", "{spec}");
        assert!(fields[1].starts_with("kube-api-access-"), "{spec}");
        assert_eq!(fields[2], "/var/run/secrets/kubernetes.io/serviceaccount", "{spec}");
        eventually("node-a may read the secret its pod uses", || {
            cluster.kubectl_as(&node_a, &["get", "secret", "used"]).ok
        });
        let unused = cluster.kubectl_as(&node_a, &["get", "secret", "unused"]);
        assert!(!unused.ok && unused.stderr.contains("Forbidden"), "{unused:?}");
        let list = cluster.kubectl_as(&node_a, &["get", "secrets"]);
        assert!(!list.ok && list.stderr.contains("Forbidden"), "{list:?}");
        // Once the pod is gone, so is the access.
        cluster.must(&["delete", "pod", "app", "--grace-period=0", "--force"]);
        eventually("node-a loses the secret with the pod", || {
            !cluster.kubectl_as(&node_a, &["get", "secret", "used"]).ok
        });
    })
    .await
    .expect("test body");
}

#[tokio::test(flavor = "multi_thread")]
async fn service_account_tokens_and_pod_security() {
    let cluster = Cluster::start_secure(Backend::Embedded, "").await;
    tokio::task::spawn_blocking(move || {
        cluster.must(&["create", "serviceaccount", "robot"]);
        let token = cluster.must(&["create", "token", "robot"]);
        let token = token.trim();
        assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
        let robot = cluster.user_kubeconfig("robot", pki::Credentials::Token(token));
        let whoami = cluster.kubectl_as(&robot, &["auth", "whoami"]);
        assert!(whoami.ok && whoami.stdout.contains("system:serviceaccount:default:robot"), "{whoami:?}");
        assert!(whoami.stdout.contains("system:serviceaccounts:default"), "{whoami:?}");
        let denied = cluster.kubectl_as(&robot, &["get", "pods"]);
        assert!(!denied.ok && denied.stderr.contains(r#"User "system:serviceaccount:default:robot" cannot list resource "pods""#), "{denied:?}");
        cluster.must(&["create", "rolebinding", "robot-view", "--clusterrole=view", "--serviceaccount=default:robot"]);
        eventually("the robot may list pods", || cluster.kubectl_as(&robot, &["get", "pods"]).ok);

        // A token signed by another key is rejected.
        let forged_key = pki::ensure(&cluster.dir().join("other-pki"), &pki::PkiOptions::default()).expect("pki");
        let signer = pki::TokenSigner::from_pem(&forged_key.service_account_key_pem).expect("signer");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let forged = signer
            .sign(&pki::Claims {
                iss: apiserver::security::DEFAULT_ISSUER.into(),
                sub: "system:serviceaccount:default:robot".into(),
                aud: vec![apiserver::security::DEFAULT_ISSUER.into()],
                exp: now + 3600,
                iat: now,
                nbf: now,
                jti: None,
                kubernetes: None,
            })
            .expect("sign");
        let forged = cluster.user_kubeconfig("forged", pki::Credentials::Token(&forged));
        assert!(unauthorized(&cluster.kubectl_as(&forged, &["get", "pods"])));

        // TokenReview answers for the real token; deleting the account revokes it.
        // (`create --raw`: plain `create -f` of a kind without PATCH falls back to client-side
        // validation, which asks for CRDs, which this server does not serve yet.)
        let review = cluster.dir().join("review.json");
        std::fs::write(
            &review,
            serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}).to_string(),
        )
        .expect("write");
        let reviewed = cluster.must(&["create", "--raw", "/apis/authentication.k8s.io/v1/tokenreviews", "-f", review.to_str().expect("utf-8")]);
        let reviewed: serde_json::Value = serde_json::from_str(&reviewed).expect("json");
        assert_eq!(reviewed["status"]["authenticated"], true, "{reviewed}");
        assert_eq!(reviewed["status"]["user"]["username"], "system:serviceaccount:default:robot");
        cluster.must(&["delete", "serviceaccount", "robot"]);
        assert!(unauthorized(&cluster.kubectl_as(&robot, &["get", "pods"])), "a token of a deleted account");

        // Bootstrap tokens (how a new node joins): the Secret in kube-system names the token.
        let bootstrap = |id: &str, expiration: &str| {
            let path = cluster.dir().join(format!("bootstrap-{id}.yaml"));
            std::fs::write(
                &path,
                format!(
                    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bootstrap-token-{id}\n  namespace: kube-system\ntype: bootstrap.kubernetes.io/token\nstringData:\n  token-id: {id}\n  token-secret: 0123456789abcdef\n  usage-bootstrap-authentication: \"true\"\n  auth-extra-groups: system:bootstrappers:coxswain:default-node-token\n  expiration: {expiration}\n"
                ),
            )
            .expect("write");
            cluster.must(&["create", "-f", path.to_str().expect("utf-8")]);
        };
        bootstrap("abcdef", "2999-01-01T00:00:00Z");
        bootstrap("expire", "2000-01-01T00:00:00Z");
        let joining = cluster.user_kubeconfig("joiner", pki::Credentials::Token("abcdef.0123456789abcdef"));
        let whoami = cluster.kubectl_as(&joining, &["auth", "whoami"]);
        assert!(whoami.ok && whoami.stdout.contains("system:bootstrap:abcdef"), "{whoami:?}");
        assert!(whoami.stdout.contains("system:bootstrappers:coxswain:default-node-token"), "{whoami:?}");
        let wrong = cluster.user_kubeconfig("wrong", pki::Credentials::Token("abcdef.0123456789abcdee"));
        assert!(unauthorized(&cluster.kubectl_as(&wrong, &["auth", "whoami"])));
        let expired = cluster.user_kubeconfig("expired", pki::Credentials::Token("expire.0123456789abcdef"));
        assert!(unauthorized(&cluster.kubectl_as(&expired, &["auth", "whoami"])));

        // PodSecurity: a restricted namespace refuses a privileged pod with upstream's message.
        cluster.must(&["create", "namespace", "locked"]);
        cluster.must(&["label", "namespace", "locked", "pod-security.kubernetes.io/enforce=restricted"]);
        cluster.must(&["create", "serviceaccount", "default", "-n", "locked"]);
        let pod = cluster.dir().join("privileged.yaml");
        std::fs::write(
            &pod,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: root\n  namespace: locked\nspec:\n  containers:\n  - name: c\n    image: busybox\n    securityContext:\n      privileged: true\n",
        )
        .expect("write");
        // warn=baseline elsewhere: the pod is admitted, kubectl prints the warning.
        cluster.must(&["create", "namespace", "watched"]);
        cluster.must(&["label", "namespace", "watched", "pod-security.kubernetes.io/warn=baseline", "pod-security.kubernetes.io/audit=restricted"]);
        cluster.must(&["create", "serviceaccount", "default", "-n", "watched"]);
        let warned = cluster.kubectl(&["create", "-f", pod.to_str().expect("utf-8"), "-n", "watched"]);
        assert!(!warned.ok, "the manifest names namespace locked: {warned:?}");
        let relaxed = cluster.dir().join("privileged-watched.yaml");
        std::fs::write(&relaxed, std::fs::read_to_string(&pod).expect("read").replace("namespace: locked", "namespace: watched")).expect("write");
        let warned = cluster.kubectl(&["create", "-f", relaxed.to_str().expect("utf-8")]);
        assert!(warned.ok, "{warned:?}");
        assert!(
            warned.stderr.contains(r#"Warning: would violate PodSecurity "baseline:latest": privileged (container "c" must not set securityContext.privileged=true)"#),
            "{warned:?}"
        );
        // audit=restricted: the violations are in the pod create's audit event.
        let log = std::fs::read_to_string(cluster.dir().join("audit.log")).expect("audit log");
        let annotated = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| {
                e["stage"] == "ResponseComplete"
                    && e["objectRef"]["resource"] == "pods"
                    && e["objectRef"]["namespace"] == "watched"
                    && e["verb"] == "create"
            })
            .expect("the pod create is audited");
        let violations = annotated["annotations"]["pod-security.kubernetes.io/audit-violations"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            violations.starts_with(r#"would violate PodSecurity "restricted:latest": privileged"#),
            "{annotated}"
        );

        let refused = cluster.kubectl(&["create", "-f", pod.to_str().expect("utf-8")]);
        assert!(!refused.ok);
        assert!(
            refused.stderr.contains(r#"pods "root" is forbidden: violates PodSecurity "restricted:latest": privileged (container "c" must not set securityContext.privileged=true)"#),
            "{refused:?}"
        );
    })
    .await
    .expect("test body");
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_ciphertext_in_etcd() {
    use storage::Storage;
    let cluster = Cluster::start_secure(Backend::Etcd, "").await;
    let endpoint = cluster.etcd_endpoint().expect("etcd");
    let cluster = std::sync::Arc::new(cluster);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || {
        c.must(&[
            "create",
            "secret",
            "generic",
            "db",
            "--from-literal=password=hunter2-plaintext",
        ]);
        c.must(&[
            "create",
            "configmap",
            "settings",
            "--from-literal=colour=blue-plaintext",
        ]);
        let through_api = c.must(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
        assert_eq!(
            through_api, "aHVudGVyMi1wbGFpbnRleHQ=",
            "plaintext through the API"
        );
    })
    .await
    .expect("kubectl");
    let etcd = storage::etcd::EtcdStore::connect(&[endpoint])
        .await
        .expect("etcd client");
    let secret = etcd
        .get("/registry/core/secrets/default/db")
        .await
        .expect("raw secret");
    assert!(
        secret.value.starts_with(b"k8s:enc:aesgcm:v1:key1:"),
        "{:?}",
        String::from_utf8_lossy(&secret.value[..40.min(secret.value.len())])
    );
    let raw = String::from_utf8_lossy(&secret.value);
    assert!(
        !raw.contains("aHVudGVyMi1wbGFpbnRleHQ") && !raw.contains("hunter2"),
        "no plaintext at rest"
    );
    // Resources the configuration does not name stay plaintext.
    let cm = etcd
        .get("/registry/core/configmaps/default/settings")
        .await
        .expect("raw configmap");
    assert!(String::from_utf8_lossy(&cm.value).contains("blue-plaintext"));

    // Key rotation, as upstream documents it: a new key first (the old one still reads), then
    // `kubectl replace` of every Secret rewrites them under the new key although their content
    // is unchanged.
    let mut cluster = std::sync::Arc::into_inner(cluster).expect("the only handle");
    std::fs::write(
        cluster.dir().join("encryption.yaml"),
        e2e::ENCRYPTION_CONFIG.replace(
            "      keys:\n",
            "      keys:\n      - name: key2\n        secret: YW5vdGhlciBzZWNyZXQga2V5OiAzMiBieXRlcyEhISE=\n",
        ),
    )
    .expect("rotate the config");
    cluster.restart().await;
    let cluster = std::sync::Arc::new(cluster);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || {
        let through_api = c.must(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
        assert_eq!(
            through_api, "aHVudGVyMi1wbGFpbnRleHQ=",
            "the old key still reads"
        );
        let json = c.must(&["get", "secrets", "-o", "json"]);
        let replaced = c.kubectl_stdin(&["replace", "-f", "-"], Some(&json));
        assert!(replaced.ok, "{replaced:?}");
    })
    .await
    .expect("kubectl");
    let secret = etcd
        .get("/registry/core/secrets/default/db")
        .await
        .expect("raw secret");
    assert!(
        secret.value.starts_with(b"k8s:enc:aesgcm:v1:key2:"),
        "rewritten under the new key: {:?}",
        String::from_utf8_lossy(&secret.value[..40.min(secret.value.len())])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_secure_port_never_crashes_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = Cluster::start_secure(Backend::Embedded, "").await;
    let port: u16 = cluster
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    // Not TLS at all; a TLS record header announcing 16 MB; half a handshake, then silence.
    let garbage: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0xff, 0xff, 0xff],
        &[
            0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03,
        ],
    ];
    for bytes in garbage {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let _ = conn.write_all(bytes).await;
        let mut buf = [0u8; 256];
        let _ = tokio::time::timeout(Duration::from_millis(500), conn.read(&mut buf)).await;
    }
    // A real TLS client with a 1 MB header and with a garbage token.
    let pki = cluster.pki.as_ref().expect("secure");
    let tls = pki::client_config(pki.ca.cert_pem(), None).expect("client config");
    let connector = tokio_rustls::TlsConnector::from(tls);
    for request in [
        format!("GET /version HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20)),
        "GET /api/v1/pods HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \u{1}\u{2}...\r\nConnection: close\r\n\r\n".to_string(),
    ] {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut conn = connector.connect(name, tcp).await.expect("handshake");
        let _ = conn.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
        let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).to_string();
        assert!(
            head.is_empty() || head.starts_with("HTTP/1.1 4"),
            "a 4xx or a closed connection: {head:?}"
        );
    }
    // Still serving.
    tokio::task::spawn_blocking(move || {
        cluster.must(&["get", "namespaces"]);
    })
    .await
    .expect("kubectl");
}
