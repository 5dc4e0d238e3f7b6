"""The official Python client (kubernetes 32.0.1) against cox-apiserver.

Run by e2e/tests/python_client.rs with the kubeconfig path as the only argument. Prints one
line per step; any exception fails the test with its traceback.
"""
import sys
import threading

from kubernetes import client, config, watch

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
apps = client.AppsV1Api()

# /version/ with its trailing slash, as VersionApi sends it.
print("version", client.VersionApi().get_code().minor)

cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"from": "python"}), data={"k": "v"})
v1.create_namespaced_config_map("default", cm)
got = v1.read_namespaced_config_map("py", "default")
print("read", got.data["k"])

listed = v1.list_namespaced_config_map("default", label_selector="from=python")
print("list", [i.metadata.name for i in listed.items])

# A watch with watch=True (capital T, as client v32 sends it), split on newlines.
events = []
w = watch.Watch()
def writer():
    v1.patch_namespaced_config_map("py", "default", {"data": {"k": "v2"}})
    v1.delete_namespaced_config_map("py", "default")
threading.Timer(0.5, writer).start()
for event in w.stream(v1.list_namespaced_config_map, "default", label_selector="from=python",
                      resource_version=listed.metadata.resource_version, timeout_seconds=5):
    events.append(event["type"])
    if event["type"] == "DELETED":
        w.stop()
print("watch", events)

# Typed deserialisation is strict: a Deployment must come back with every required field.
dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="pyweb"),
    spec=client.V1DeploymentSpec(
        selector=client.V1LabelSelector(match_labels={"app": "pyweb"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "pyweb"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1.36")]))))
created = apps.create_namespaced_deployment("default", dep)
print("deployment", created.spec.replicas, created.spec.strategy.type)

# Delete options as query parameters, the way this client sends them.
apps.delete_namespaced_deployment("pyweb", "default", propagation_policy="Background", grace_period_seconds=0)
try:
    apps.read_namespaced_deployment("pyweb", "default")
    print("still there")
except client.exceptions.ApiException as e:
    print("gone", e.status)
