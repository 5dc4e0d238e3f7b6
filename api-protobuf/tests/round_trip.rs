//! For each kind: a representative object, serialized by its k8s-openapi type, survives
//! `encode` → `decode` unchanged. The objects exercise the JSON shapes protobuf does not share:
//! times, micro-times, quantities, int-or-string, bytes, maps, inline-embedded structs,
//! renamed fields, raw extensions, and Go pointer fields holding zero values (which must
//! survive, unlike zero values of plain fields).
//!
//! One limit is inherent: a plain Go field set to its zero value (`"paused": false`) cannot
//! be told apart from an unset one on the wire, so such values are left out of these objects.

use api_types::k8s_openapi::api;
use api_types::k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};

/// The JSON k8s-openapi produces for `value` read as `T`.
fn canonical<T: Serialize + DeserializeOwned>(value: Value) -> Value {
    let typed: T = serde_json::from_value(value).expect("fixture fits the k8s-openapi type");
    serde_json::to_value(typed).expect("serializes")
}

#[track_caller]
fn round_trip<T: Serialize + DeserializeOwned>(value: Value) -> Value {
    let expected = canonical::<T>(value);
    let body = api_protobuf::encode(&expected).unwrap_or_else(|e| panic!("encode: {e}"));
    assert_eq!(&body[..4], b"k8s\0");
    let decoded = api_protobuf::decode(&body).unwrap_or_else(|e| panic!("decode: {e}"));
    assert_eq!(
        decoded,
        expected,
        "\n decoded  {}\n expected {}",
        serde_json::to_string(&decoded).unwrap_or_default(),
        serde_json::to_string(&expected).unwrap_or_default()
    );
    decoded
}

fn metadata() -> Value {
    json!({
        "name": "web",
        "namespace": "default",
        "labels": {"app": "web", "tier": "frontend"},
        "annotations": {"example.com/note": "hello", "empty": ""},
        "uid": "5c8077f9-280a-4647-8e99-fcc0721fcb48",
        "resourceVersion": "132",
        "generation": 3,
        "creationTimestamp": "2025-11-29T03:45:41Z",
        "deletionTimestamp": "2025-11-29T04:00:00Z",
        "deletionGracePeriodSeconds": 0,
        "finalizers": ["example.com/cleanup"],
        "ownerReferences": [{
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "web-6a647f8129",
            "uid": "0b8c0f4e-5d4f-4a3c-9f6e-0d6f2a1b2c3d",
            "controller": true,
            "blockOwnerDeletion": false
        }],
        "managedFields": [{
            "manager": "kubectl-create",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2025-11-29T03:45:41Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {".": {}, "f:mode": {}}}
        }]
    })
}

#[test]
fn configmap_with_data_binary_data_and_full_metadata() {
    round_trip::<api::core::v1::ConfigMap>(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(),
        "data": {"mode": "prod", "config.yaml": "a: 1\nb: [2, 3]\n", "unicode": "héllo ✓"},
        "binaryData": {"blob": "AAEC/v8="},
        "immutable": true
    }));
}

#[test]
fn secret_bytes_are_base64_and_pointer_false_survives() {
    let decoded = round_trip::<api::core::v1::Secret>(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "default"},
        "type": "kubernetes.io/basic-auth",
        "data": {"username": "YWRtaW4=", "binary": "/wD+AQ==", "empty": ""},
        "immutable": false
    }));
    assert_eq!(decoded["immutable"], false, "*bool false is kept");
    assert_eq!(decoded["data"]["empty"], "");
}

#[test]
fn secret_string_data_travels_in_protobuf_too() {
    // Secret.stringData has a protobuf field (4); the server must still merge it into data.
    round_trip::<api::core::v1::Secret>(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "stringData": {"a": "b"}
    }));
}

fn pod_spec() -> Value {
    json!({
        "containers": [{
            "name": "web",
            "image": "nginx:1.27",
            "imagePullPolicy": "IfNotPresent",
            "command": ["nginx"],
            "args": ["-g", "daemon off;"],
            "ports": [
                {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                {"containerPort": 9090, "hostPort": 9090, "protocol": "UDP"}
            ],
            "env": [
                {"name": "MODE", "value": "prod"},
                {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "mode", "optional": true}}},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pass"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}},
                {"name": "LIMIT", "valueFrom": {"resourceFieldRef": {"containerName": "web", "resource": "limits.memory", "divisor": "1Mi"}}}
            ],
            "envFrom": [{"prefix": "CM_", "configMapRef": {"name": "app-config"}}, {"secretRef": {"name": "creds", "optional": false}}],
            "resources": {
                "limits": {"cpu": "500m", "memory": "128Mi", "nvidia.com/gpu": "1"},
                "requests": {"cpu": "250m", "memory": "64Mi"}
            },
            "livenessProbe": {
                "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP", "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                "initialDelaySeconds": 5,
                "periodSeconds": 10,
                "failureThreshold": 3
            },
            "readinessProbe": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 2},
            "startupProbe": {"exec": {"command": ["cat", "/tmp/ready"]}},
            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/app", "readOnly": true}],
            "securityContext": {
                "runAsUser": 0,
                "runAsNonRoot": false,
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]}
            }
        }],
        "initContainers": [{"name": "init", "image": "busybox", "restartPolicy": "Always"}],
        "volumes": [
            {"name": "config", "configMap": {"name": "app-config", "defaultMode": 420, "items": [{"key": "mode", "path": "mode.txt"}]}},
            {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "data", "readOnly": true}},
            {"name": "all", "projected": {"sources": [
                {"configMap": {"name": "app-config"}},
                {"secret": {"name": "creds", "items": [{"key": "pass", "path": "p", "mode": 256}]}},
                {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 3600, "path": "token"}}
            ]}}
        ],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "serviceAccountName": "robot",
        "automountServiceAccountToken": false,
        "securityContext": {"runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [1000, 2000]},
        "imagePullSecrets": [{"name": "regcred"}],
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
        }]}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}],
        "overhead": {"cpu": "10m"},
        "priority": 0
    })
}

#[test]
fn deployment_with_pod_template_quantities_and_int_or_string() {
    let decoded = round_trip::<api::apps::v1::Deployment>(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": 0,
            "revisionHistoryLimit": 0,
            "progressDeadlineSeconds": 600,
            "minReadySeconds": 5,
            "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend", "edge"]}]
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()}
        },
        "status": {
            "observedGeneration": 2,
            "replicas": 3,
            "updatedReplicas": 3,
            "readyReplicas": 3,
            "availableReplicas": 3,
            "conditions": [{
                "type": "Available",
                "status": "True",
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
                "lastUpdateTime": "2025-11-29T03:45:45Z",
                "lastTransitionTime": "2025-11-29T03:45:45Z"
            }]
        }
    }));
    // *int32 zero values are kept: replicas 0 is a real request to scale to zero.
    assert_eq!(decoded["spec"]["replicas"], 0);
    assert_eq!(
        decoded["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        "25%"
    );
    assert_eq!(
        decoded["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    let container = &decoded["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["limits"]["cpu"], "500m");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "http");
    assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], 8080);
    assert_eq!(
        container["env"][1]["valueFrom"]["configMapKeyRef"]["name"],
        "app-config"
    );
}

#[test]
fn pod_with_ephemeral_containers_and_status() {
    let mut spec = pod_spec();
    spec["ephemeralContainers"] = json!([{
        "name": "debugger",
        "image": "busybox",
        "targetContainerName": "web",
        "stdin": true,
        "tty": true
    }]);
    spec["nodeName"] = json!("node-1");
    round_trip::<api::core::v1::Pod>(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "generateName": "web-"},
        "spec": spec,
        "status": {
            "phase": "Running",
            "podIP": "10.244.0.11",
            "podIPs": [{"ip": "10.244.0.11"}, {"ip": "fd00::b"}],
            "hostIP": "172.18.0.2",
            "qosClass": "Burstable",
            "startTime": "2025-11-29T03:54:40Z",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2025-11-29T03:54:42Z"}],
            "containerStatuses": [{
                "name": "web",
                "ready": true,
                "started": true,
                "restartCount": 2,
                "image": "nginx:1.27",
                "imageID": "docker.io/library/nginx@sha256:abc",
                "containerID": "containerd://123",
                "state": {"running": {"startedAt": "2025-11-29T03:54:41Z"}},
                "lastState": {"terminated": {"exitCode": 137, "signal": 9, "reason": "OOMKilled", "startedAt": "2025-11-29T03:50:00Z", "finishedAt": "2025-11-29T03:54:00Z"}},
                "allocatedResources": {"cpu": "250m"}
            }]
        }
    }));
}

#[test]
fn service_ports_with_numeric_and_named_target_ports() {
    let decoded = round_trip::<api::core::v1::Service>(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "type": "NodePort",
            "selector": {"app": "web"},
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080},
                {"name": "https", "protocol": "TCP", "port": 443, "targetPort": "https", "appProtocol": "https"}
            ],
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
            "externalTrafficPolicy": "Local",
            "internalTrafficPolicy": "Cluster",
            "allocateLoadBalancerNodePorts": false
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1", "ipMode": "VIP", "ports": [{"port": 80, "protocol": "TCP"}]}]}}
    }));
    assert_eq!(decoded["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(decoded["spec"]["ports"][1]["targetPort"], "https");
}

#[test]
fn namespace() {
    round_trip::<api::core::v1::Namespace>(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a"}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    }));
}

#[test]
fn job_and_cronjob() {
    let template = json!({"spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "exit 3"]}]
    }});
    round_trip::<api::batch::v1::Job>(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j1", "namespace": "default"},
        "spec": {
            "parallelism": 2,
            "completions": 4,
            "backoffLimit": 0,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 100,
            "completionMode": "Indexed",
            "suspend": false,
            "podFailurePolicy": {"rules": [{
                "action": "FailJob",
                "onExitCodes": {"containerName": "main", "operator": "In", "values": [1, 2, 3]}
            }]},
            "template": template
        },
        "status": {
            "startTime": "2025-11-29T03:00:00Z",
            "completionTime": "2025-11-29T03:05:00Z",
            "active": 1,
            "succeeded": 3,
            "completedIndexes": "0-2",
            "ready": 0
        }
    }));
    round_trip::<api::batch::v1::CronJob>(json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "cj", "namespace": "default"},
        "spec": {
            "schedule": "*/5 * * * *",
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 0,
            "successfulJobsHistoryLimit": 3,
            "jobTemplate": {"metadata": {"labels": {"cron": "cj"}}, "spec": {"template": template}}
        },
        "status": {"lastScheduleTime": "2025-11-29T03:05:00Z", "active": [{"kind": "Job", "name": "cj-1", "namespace": "default"}]}
    }));
}

#[test]
fn self_subject_access_review() {
    round_trip::<api::authorization::v1::SelfSubjectAccessReview>(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "metadata": {},
        "spec": {"resourceAttributes": {
            "namespace": "default", "verb": "get", "group": "apps", "version": "v1",
            "resource": "deployments", "subresource": "scale", "name": "web",
            "fieldSelector": {"requirements": [{"key": "spec.nodeName", "operator": "In", "values": ["n1"]}]},
            "labelSelector": {"rawSelector": "app=web"}
        }},
        "status": {"allowed": true, "reason": "RBAC: allowed by RoleBinding"}
    }));
    round_trip::<api::authorization::v1::SelfSubjectAccessReview>(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}},
        "status": {"allowed": false, "denied": true, "evaluationError": "none"}
    }));
}

#[test]
fn other_reviews() {
    round_trip::<api::authorization::v1::SelfSubjectRulesReview>(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": "default"},
        "status": {
            "incomplete": true,
            "evaluationError": "webhook unavailable",
            "resourceRules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["p1"]}],
            "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/version"]}]
        }
    }));
    round_trip::<api::authorization::v1::SubjectAccessReview>(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "alice", "uid": "42", "groups": ["devs", "system:authenticated"],
            "extra": {"scopes": ["read", "write"], "empty": []},
            "resourceAttributes": {"verb": "list", "resource": "pods"}
        },
        "status": {"allowed": true}
    }));
    round_trip::<api::authorization::v1::LocalSubjectAccessReview>(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "LocalSubjectAccessReview",
        "metadata": {"namespace": "default"},
        "spec": {"user": "bob", "resourceAttributes": {"namespace": "default", "verb": "delete", "resource": "secrets"}},
        "status": {"allowed": false}
    }));
    round_trip::<api::authentication::v1::TokenReview>(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": "eyJhbGciOi", "audiences": ["api"]},
        "status": {
            "authenticated": true,
            "audiences": ["api"],
            "user": {"username": "system:serviceaccount:default:robot", "uid": "u-1", "groups": ["system:serviceaccounts"], "extra": {"authentication.kubernetes.io/pod-name": ["web-1"]}}
        }
    }));
}

#[test]
fn self_subject_review_empty_and_answered() {
    let empty = round_trip::<api::authentication::v1::SelfSubjectReview>(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview"
    }));
    assert_eq!(empty["kind"], "SelfSubjectReview");
    round_trip::<api::authentication::v1::SelfSubjectReview>(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview",
        "metadata": {"creationTimestamp": "2025-11-29T03:45:41Z"},
        "status": {"userInfo": {"username": "admin", "groups": ["system:masters"], "extra": {"k": ["a", "b"]}}}
    }));
}

#[test]
fn token_request_with_bound_object_reference() {
    let decoded = round_trip::<api::authentication::v1::TokenRequest>(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": "default", "namespace": "default"},
        "spec": {
            "audiences": ["https://kubernetes.default.svc", "vault"],
            "expirationSeconds": 3600,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-1", "uid": "u-1"}
        },
        "status": {"token": "eyJhbGciOi", "expirationTimestamp": "2025-11-29T04:45:41Z"}
    }));
    // Protobuf calls this field `uID`; JSON calls it `uid`.
    assert_eq!(decoded["spec"]["boundObjectRef"]["uid"], "u-1");
}

#[test]
fn eviction_binding_scale_and_delete_options() {
    let delete_options = json!({
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": "u-1", "resourceVersion": "7"},
        "propagationPolicy": "Foreground",
        "dryRun": ["All"],
        "orphanDependents": false,
        "ignoreStoreReadErrorWithClusterBreakingPotential": true
    });
    round_trip::<api::policy::v1::Eviction>(json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "web-1", "namespace": "default"},
        "deleteOptions": delete_options
    }));
    round_trip::<api::core::v1::Binding>(json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "web-1", "namespace": "default"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}
    }));
    round_trip::<api::autoscaling::v1::Scale>(json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": "132"},
        "spec": {"replicas": 2},
        "status": {"replicas": 2, "selector": "app=web"}
    }));
    for api_version in ["v1", "apps/v1", "meta.k8s.io/v1"] {
        let mut options = delete_options.clone();
        options["apiVersion"] = json!(api_version);
        options["kind"] = json!("DeleteOptions");
        round_trip::<meta::DeleteOptions>(options);
    }
}

#[test]
fn horizontal_pod_autoscalers() {
    round_trip::<api::autoscaling::v1::HorizontalPodAutoscaler>(json!({
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80
        },
        "status": {"currentReplicas": 2, "desiredReplicas": 3, "lastScaleTime": "2025-11-29T03:45:41Z"}
    }));
    round_trip::<api::autoscaling::v2::HorizontalPodAutoscaler>(json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": 10,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
                {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}}
            ],
            "behavior": {"scaleDown": {
                "stabilizationWindowSeconds": 300,
                "selectPolicy": "Min",
                "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]
            }}
        },
        "status": {
            "currentReplicas": 2,
            "desiredReplicas": 2,
            "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 55, "averageValue": "275m"}}}],
            "conditions": [{"type": "AbleToScale", "status": "True", "lastTransitionTime": "2025-11-29T03:45:41Z"}]
        }
    }));
}

#[test]
fn rbac_kinds() {
    let rules = json!([
        {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"], "resourceNames": ["p1"]},
        {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}
    ]);
    round_trip::<api::rbac::v1::Role>(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "pod-reader", "namespace": "default"}, "rules": rules
    }));
    round_trip::<api::rbac::v1::ClusterRole>(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "agg"}, "rules": rules,
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.example.com/aggregate": "true"}}]}
    }));
    let subjects = json!([
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
        {"kind": "ServiceAccount", "name": "robot", "namespace": "default"}
    ]);
    round_trip::<api::rbac::v1::RoleBinding>(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "rb", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": subjects
    }));
    round_trip::<api::rbac::v1::ClusterRoleBinding>(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "crb"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "agg"},
        "subjects": subjects
    }));
}

#[test]
fn networking_kinds_with_inline_rule_values() {
    round_trip::<api::networking::v1::Ingress>(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "ing", "namespace": "default"},
        "spec": {
            "ingressClassName": "nginx",
            "defaultBackend": {"resource": {"apiGroup": "example.com", "kind": "Bucket", "name": "static"}},
            "tls": [{"hosts": ["foo.com"], "secretName": "my-cert"}],
            "rules": [{"host": "foo.com", "http": {"paths": [
                {"path": "/bar", "pathType": "Prefix", "backend": {"service": {"name": "svc1", "port": {"number": 8080}}}},
                {"path": "/baz", "pathType": "Exact", "backend": {"service": {"name": "svc2", "port": {"name": "http"}}}}
            ]}}]
        },
        "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}
    }));
    round_trip::<api::networking::v1::IngressClass>(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "nginx"},
        "spec": {"controller": "k8s.io/ingress-nginx", "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p", "scope": "Cluster"}}
    }));
    round_trip::<api::networking::v1::NetworkPolicy>(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "np", "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}, {"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": 80}, {"port": "https", "endPort": 8443}]}],
            "egress": [{}]
        }
    }));
}

#[test]
fn policy_scheduling_coordination_and_events() {
    round_trip::<api::policy::v1::PodDisruptionBudget>(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "pdb", "namespace": "default"},
        "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}, "unhealthyPodEvictionPolicy": "AlwaysAllow"},
        "status": {"currentHealthy": 3, "desiredHealthy": 2, "disruptionsAllowed": 1, "expectedPods": 3, "observedGeneration": 1,
                   "disruptedPods": {"web-1": "2025-11-29T03:45:41Z"}}
    }));
    round_trip::<api::scheduling::v1::PriorityClass>(json!({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "high"}, "value": 1000, "globalDefault": true,
        "description": "high prio", "preemptionPolicy": "Never"
    }));
    let lease = round_trip::<api::coordination::v1::Lease>(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "node-1", "namespace": "kube-node-lease"},
        "spec": {
            "holderIdentity": "node-1", "leaseDurationSeconds": 40, "leaseTransitions": 0,
            "acquireTime": "2025-11-29T03:45:41.000000Z", "renewTime": "2025-11-29T03:46:01.123456Z"
        }
    }));
    assert_eq!(lease["spec"]["renewTime"], "2025-11-29T03:46:01.123456Z");
    round_trip::<api::core::v1::Event>(json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "web-1.17f", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-1", "uid": "u-1", "apiVersion": "v1", "resourceVersion": "12", "fieldPath": "spec.containers{web}"},
        "reason": "Started", "message": "Started container web", "type": "Normal", "count": 2,
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": "2025-11-29T03:45:41Z", "lastTimestamp": "2025-11-29T03:46:41Z",
        "eventTime": "2025-11-29T03:45:41.654321Z",
        "series": {"count": 2, "lastObservedTime": "2025-11-29T03:46:41.000001Z"},
        "reportingComponent": "kubelet", "reportingInstance": "node-1", "action": "Start"
    }));
    round_trip::<api::events::v1::Event>(json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "e", "namespace": "default"},
        "eventTime": "2025-11-29T03:45:41.000000Z", "reportingController": "kubelet",
        "reportingInstance": "node-1", "action": "Start", "reason": "Started", "type": "Normal",
        "regarding": {"kind": "Pod", "name": "web-1"}, "note": "hello"
    }));
    round_trip::<api::discovery::v1::EndpointSlice>(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.11"], "conditions": {"ready": false, "serving": true, "terminating": false},
                       "nodeName": "node-1", "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default"}, "zone": "a"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]
    }));
}

#[test]
fn storage_and_volume_kinds_with_inline_sources() {
    round_trip::<api::core::v1::PersistentVolume>(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pv1"},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "standard",
            "volumeMode": "Filesystem",
            "hostPath": {"path": "/data/pv1", "type": "DirectoryOrCreate"},
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "default", "name": "data"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-1"]}]}]}}
        },
        "status": {"phase": "Bound", "lastPhaseTransitionTime": "2025-11-29T03:45:41Z"}
    }));
    round_trip::<api::core::v1::PersistentVolumeClaim>(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": ""},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}
    }));
    round_trip::<api::storage::v1::StorageClass>(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": false,
        "parameters": {"type": "local"}, "mountOptions": ["noatime"]
    }));
    round_trip::<api::apps::v1::StatefulSet>(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {
            "serviceName": "db", "replicas": 1, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "postgres"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0, "maxUnavailable": "10%"}},
            "ordinals": {"start": 2}
        }
    }));
}

#[test]
fn controller_revision_raw_extension() {
    round_trip::<api::apps::v1::ControllerRevision>(json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": "web-6a647f8129", "namespace": "default"},
        "data": {"spec": {"template": {"$patch": "replace", "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}},
        "revision": 2
    }));
}

#[test]
fn admission_kinds_with_renamed_and_inline_fields() {
    round_trip::<api::admissionregistration::v1::ValidatingWebhookConfiguration>(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "vwc"},
        "webhooks": [{
            "name": "check.example.com",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
            "clientConfig": {"service": {"namespace": "default", "name": "hook", "path": "/check", "port": 443}, "caBundle": "Y2E="},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"], "scope": "Namespaced"}],
            "matchConditions": [{"name": "not-system", "expression": "!request.userInfo.username.startsWith('system:')"}]
        }]
    }));
    round_trip::<api::admissionregistration::v1::ValidatingAdmissionPolicy>(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "replicas"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["deployments"], "resourceNames": ["web"]}]},
            "variables": [{"name": "replicas", "expression": "object.spec.replicas"}],
            "validations": [{"expression": "variables.replicas <= 5", "message": "too many", "reason": "Invalid"}]
        }
    }));
}

#[test]
fn node_with_status() {
    round_trip::<api::core::v1::Node>(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
        "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"], "taints": [{"key": "k", "value": "v", "effect": "NoSchedule", "timeAdded": "2025-11-29T03:45:41Z"}], "unschedulable": true},
        "status": {
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "1900m", "memory": "3800Mi", "pods": "110"},
            "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}, {"type": "Hostname", "address": "node-1"}],
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2025-11-29T03:45:41Z", "lastTransitionTime": "2025-11-29T03:40:00Z", "reason": "KubeletReady"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b", "kernelVersion": "6.1", "osImage": "Debian", "containerRuntimeVersion": "containerd://1.7", "kubeletVersion": "v1.32.4", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
            "images": [{"names": ["nginx:1.27"], "sizeBytes": 72000000}]
        }
    }));
}

#[test]
fn every_served_kind_round_trips_a_minimal_object() {
    for r in api_types::RESOURCES {
        let mut object = json!({
            "apiVersion": r.api_version(),
            "kind": r.kind,
            "metadata": {"name": "x", "labels": {"a": "b"}, "creationTimestamp": "2025-11-29T03:45:41Z"}
        });
        if r.namespaced {
            object["metadata"]["namespace"] = json!("default");
        }
        let body = api_protobuf::encode(&object)
            .unwrap_or_else(|e| panic!("{} {}: {e}", r.api_version(), r.kind));
        let decoded = api_protobuf::decode(&body)
            .unwrap_or_else(|e| panic!("{} {}: {e}", r.api_version(), r.kind));
        assert_eq!(decoded["metadata"], object["metadata"], "{}", r.kind);
        assert_eq!(decoded["kind"], r.kind);
        assert_eq!(decoded["apiVersion"], r.api_version().as_str());
    }
}
