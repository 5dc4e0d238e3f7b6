//! The operations of every served resource, in a form both renderers share: [`crate::v3`]
//! writes them as OpenAPI 3.0 path items, [`crate::v2`] as swagger 2.0 ones.
//!
//! The operations follow upstream's: the same paths (including the deprecated `/watch/`
//! ones), operation ids, `x-kubernetes-action` values and parameters. kubectl reads two
//! things from them: the PATCH operation's `x-kubernetes-group-version-kind` and
//! `fieldValidation` parameter (without them `apply`/`create -f`/`replace` refuse to run), and
//! the PATCH request body's content types (client-side apply sends a strategic merge patch only
//! if `application/strategic-merge-patch+json` is listed).

use api_types::resources::{ResourceInfo, Subresource, Verb, RESOURCES};

use crate::definitions::{
    api_version, untyped_name, Definitions, Gvk, API_RESOURCE_LIST, DELETE_OPTIONS, PATCH, STATUS,
    WATCH_EVENT,
};

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum In {
    Query,
    Path,
}

/// One parameter of an operation or a path item.
#[derive(Debug, Clone)]
pub(crate) struct Param {
    pub name: &'static str,
    pub location: In,
    /// `string`, `integer` or `boolean`.
    pub ty: &'static str,
    pub description: String,
    pub required: bool,
}

/// What a request or response body holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// An object of the named definition.
    Def(String),
    /// Free text (logs, exec streams).
    Text,
}

/// One response of an operation.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub code: &'static str,
    pub description: &'static str,
    pub body: Body,
}

/// One operation (`get`, `put`, `post`, `patch`, `delete`) of a path item.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub method: &'static str,
    /// `x-kubernetes-action`.
    pub action: &'static str,
    pub operation_id: String,
    pub description: String,
    pub params: Vec<Param>,
    /// The request body and the content types it may come in.
    pub body: Option<(Body, &'static [&'static str])>,
    pub responses: Vec<Response>,
    pub produces: &'static [&'static str],
    /// `x-kubernetes-group-version-kind`.
    pub gvk: Option<Gvk>,
    pub tag: String,
}

/// One path and its operations.
#[derive(Debug, Clone)]
pub(crate) struct PathItem {
    pub path: String,
    pub params: Vec<Param>,
    pub ops: Vec<Operation>,
}

/// The PATCH content types the server accepts, in upstream's order.
pub(crate) const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];
const ANY: &[&str] = &["*/*"];
const PRODUCES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];
const PRODUCES_LIST: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
];
const PRODUCES_LOG: &[&str] = &[
    "text/plain",
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];

fn q(name: &'static str, ty: &'static str, description: &str) -> Param {
    Param {
        name,
        location: In::Query,
        ty,
        description: description.to_string(),
        required: false,
    }
}

fn path_param(name: &'static str, description: String) -> Param {
    Param {
        name,
        location: In::Path,
        ty: "string",
        description,
        required: true,
    }
}

fn pretty() -> Param {
    q(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed.",
    )
}
fn dry_run() -> Param {
    q("dryRun", "string", "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed")
}
fn field_manager(patch: bool) -> Param {
    let mut d = String::from("fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.");
    if patch {
        d.push_str(" This field is required for apply requests (application/apply-patch) but optional for non-apply patch types (JsonPatch, MergePatch, StrategicMergePatch).");
    }
    q("fieldManager", "string", &d)
}
fn field_validation() -> Param {
    q("fieldValidation", "string", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.")
}
fn force() -> Param {
    q("force", "boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.")
}
fn write_params() -> Vec<Param> {
    vec![dry_run(), field_manager(false), field_validation()]
}
fn patch_params() -> Vec<Param> {
    vec![dry_run(), field_manager(true), field_validation(), force()]
}
fn list_params() -> Vec<Param> {
    vec![
        q("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not assume bookmarks are returned at any specific interval, nor may they assume the server will send any BOOKMARK event during a session. If this is not a watch, this field is ignored."),
        q("continue", "string", "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue) and the server may reject a continue value it does not recognize. If the specified continue value is no longer valid the server will respond with a 410 ResourceExpired error together with a continue token."),
        q("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
        q("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
        q("limit", "integer", "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results."),
        q("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset"),
        q("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset"),
        q("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection. Once all such events have been sent, a synthetic \"Bookmark\" event will be sent."),
        q("timeoutSeconds", "integer", "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity."),
        q("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion."),
    ]
}
fn delete_params() -> Vec<Param> {
    vec![
        dry_run(),
        q("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately."),
        q("ignoreStoreReadErrorWithClusterBreakingPotential", "boolean", "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error."),
        q("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both."),
        q("propagationPolicy", "string", "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground."),
    ]
}
fn log_params() -> Vec<Param> {
    vec![
        q("container", "string", "The container for which to stream logs. Defaults to only container if there is one container in the pod."),
        q("follow", "boolean", "Follow the log stream of the pod. Defaults to false."),
        q("insecureSkipTLSVerifyBackend", "boolean", "insecureSkipTLSVerifyBackend indicates that the apiserver should not confirm the validity of the serving certificate of the backend it is connecting to."),
        q("limitBytes", "integer", "If set, the number of bytes to read from the server before terminating the log output."),
        q("previous", "boolean", "Return previous terminated container logs. Defaults to false."),
        q("sinceSeconds", "integer", "A relative time in seconds before the current time from which to show logs."),
        q("stream", "string", "Specify which container log stream to return to the client. Acceptable values are \"All\", \"Stdout\" and \"Stderr\". If not specified, \"All\" is used."),
        q("tailLines", "integer", "If set, the number of lines from the end of the logs to show."),
        q("timestamps", "boolean", "If true, add an RFC3339 or RFC3339Nano timestamp at the beginning of every line of log output. Defaults to false."),
    ]
}
fn connect_params(sub: &str) -> Vec<Param> {
    let stream = |name: &'static str, what: &str| {
        q(
            name,
            "boolean",
            &format!("Redirect the standard {what} stream of the pod for this call."),
        )
    };
    let container = q("container", "string", "The container in which to execute the command. Defaults to only container if there is only one container in the pod.");
    match sub {
        "exec" => vec![
            q("command", "string", "Command is the remote command to execute. argv array. Not executed within a shell."),
            container,
            stream("stderr", "error"),
            stream("stdin", "input"),
            stream("stdout", "output"),
            q("tty", "boolean", "TTY if true indicates that a tty will be allocated for the exec call. Defaults to false."),
        ],
        "attach" => vec![
            container,
            stream("stderr", "error"),
            stream("stdin", "input"),
            stream("stdout", "output"),
            q("tty", "boolean", "TTY if true indicates that a tty will be allocated for the attach call."),
        ],
        "portforward" => vec![q("ports", "integer", "List of ports to forward Required when using WebSockets")],
        "proxy" => vec![q("path", "string", "Path is the URL path to use for the current proxy request to the target.")],
        _ => Vec::new(),
    }
}

/// `rbac.authorization.k8s.io` → `RbacAuthorization`, `""` → `Core`: upstream's operation-id
/// spelling of a group.
fn group_word(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group
        .trim_end_matches(".k8s.io")
        .split(['.', '-'])
        .map(capitalize)
        .collect()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The operation tag upstream uses, e.g. `apps_v1`, `rbacAuthorization_v1`, `core_v1`.
pub(crate) fn tag(group: &str, version: &str) -> String {
    let word = group_word(group);
    let mut c = word.chars();
    let lower: String = match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    };
    format!("{lower}_{version}")
}

/// The URL prefix of a group-version: `/api/v1` or `/apis/{group}/{version}`.
pub(crate) fn root(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

/// The key of a group-version in the `/openapi/v3` index: `api/v1`, `apis/apps/v1`.
pub(crate) fn v3_key(group: &str, version: &str) -> String {
    root(group, version).trim_start_matches('/').to_string()
}

/// Builds the operations of one group-version.
struct Builder<'a> {
    defs: &'a Definitions,
    group: &'a str,
    version: &'a str,
    /// `{Group}{Version}` for operation ids, e.g. `AppsV1`.
    gv_word: String,
    tag: String,
}

fn ok(body: &Body) -> Response {
    Response {
        code: "200",
        description: "OK",
        body: body.clone(),
    }
}
fn created(body: &Body) -> Response {
    Response {
        code: "201",
        description: "Created",
        body: body.clone(),
    }
}
fn accepted(body: &Body) -> Response {
    Response {
        code: "202",
        description: "Accepted",
        body: body.clone(),
    }
}

impl Builder<'_> {
    /// The definition of a kind; a kind without one (which `definitions` rules out for served
    /// kinds) is documented by upstream's naming convention.
    fn def(&self, group: &str, version: &str, kind: &str) -> Body {
        Body::Def(
            self.defs
                .for_gvk(group, version, kind)
                .map_or_else(|| untyped_name(group, version, kind), str::to_string),
        )
    }

    fn gvk(&self, group: &str, version: &str, kind: &str) -> Option<Gvk> {
        Some((group.to_string(), version.to_string(), kind.to_string()))
    }

    #[allow(clippy::too_many_arguments)]
    fn op(
        &self,
        method: &'static str,
        action: &'static str,
        operation_id: String,
        description: String,
        params: Vec<Param>,
        body: Option<(Body, &'static [&'static str])>,
        responses: Vec<Response>,
        produces: &'static [&'static str],
        gvk: Option<Gvk>,
    ) -> Operation {
        Operation {
            method,
            action,
            operation_id,
            description,
            params,
            body,
            responses,
            produces,
            gvk,
            tag: self.tag.clone(),
        }
    }

    fn resource(&self, r: &ResourceInfo, out: &mut Vec<PathItem>) {
        let root = root(self.group, self.version);
        let kind = r.kind;
        let gv = &self.gv_word;
        let scope = if r.namespaced { "Namespaced" } else { "" };
        let collection = if r.namespaced {
            format!("{root}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{root}/{}", r.plural)
        };
        let item = format!("{collection}/{{name}}");
        let object = self.def(r.group, r.version, kind);
        let list = self.def(r.group, r.version, &r.list_kind());
        let gvk = self.gvk(r.group, r.version, kind);
        let status = Body::Def(STATUS.to_string());
        let namespace_param = || {
            path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects".into(),
            )
        };
        let name_param = || path_param("name", format!("name of the {kind}"));
        let scoped = |mut params: Vec<Param>| {
            if r.namespaced {
                params.push(namespace_param());
            }
            params
        };

        // The collection: list, create, deletecollection.
        let mut ops = Vec::new();
        if r.has_verb(Verb::List) {
            ops.push(self.op(
                "get",
                "list",
                format!("list{gv}{scope}{kind}"),
                format!("list or watch objects of kind {kind}"),
                list_params(),
                None,
                vec![ok(&list)],
                PRODUCES_LIST,
                gvk.clone(),
            ));
        }
        if r.has_verb(Verb::Create) {
            ops.push(self.op(
                "post",
                "post",
                format!("create{gv}{scope}{kind}"),
                format!("create a {kind}"),
                write_params(),
                Some((object.clone(), ANY)),
                vec![ok(&object), created(&object), accepted(&object)],
                PRODUCES,
                gvk.clone(),
            ));
        }
        if r.has_verb(Verb::DeleteCollection) {
            let mut params = delete_params();
            params.extend(list_params());
            ops.push(self.op(
                "delete",
                "deletecollection",
                format!("delete{gv}Collection{scope}{kind}"),
                format!("delete collection of {kind}"),
                params,
                Some((Body::Def(DELETE_OPTIONS.into()), ANY)),
                vec![ok(&status)],
                PRODUCES,
                gvk.clone(),
            ));
        }
        if !ops.is_empty() {
            out.push(PathItem {
                path: collection.clone(),
                params: scoped(vec![pretty()]),
                ops,
            });
        }

        // One object: read, replace, patch, delete.
        let mut ops = Vec::new();
        if r.has_verb(Verb::Get) {
            ops.push(self.op(
                "get",
                "get",
                format!("read{gv}{scope}{kind}"),
                format!("read the specified {kind}"),
                Vec::new(),
                None,
                vec![ok(&object)],
                PRODUCES,
                gvk.clone(),
            ));
        }
        if r.has_verb(Verb::Update) {
            ops.push(self.op(
                "put",
                "put",
                format!("replace{gv}{scope}{kind}"),
                format!("replace the specified {kind}"),
                write_params(),
                Some((object.clone(), ANY)),
                vec![ok(&object), created(&object)],
                PRODUCES,
                gvk.clone(),
            ));
        }
        if r.has_verb(Verb::Patch) {
            ops.push(self.op(
                "patch",
                "patch",
                format!("patch{gv}{scope}{kind}"),
                format!("partially update the specified {kind}"),
                patch_params(),
                Some((Body::Def(PATCH.into()), PATCH_TYPES)),
                vec![ok(&object), created(&object)],
                PRODUCES,
                gvk.clone(),
            ));
        }
        if r.has_verb(Verb::Delete) {
            ops.push(self.op(
                "delete",
                "delete",
                format!("delete{gv}{scope}{kind}"),
                format!("delete a {kind}"),
                delete_params(),
                Some((Body::Def(DELETE_OPTIONS.into()), ANY)),
                vec![ok(&status), accepted(&status)],
                PRODUCES,
                gvk.clone(),
            ));
        }
        if !ops.is_empty() {
            let mut params = vec![name_param()];
            params = scoped(params);
            params.push(pretty());
            out.push(PathItem {
                path: item.clone(),
                params,
                ops,
            });
        }

        if r.has_verb(Verb::List) && r.namespaced {
            out.push(PathItem {
                path: format!("{root}/{}", r.plural),
                params: {
                    let mut p = list_params();
                    p.push(pretty());
                    p
                },
                ops: vec![self.op(
                    "get",
                    "list",
                    format!("list{gv}{kind}ForAllNamespaces"),
                    format!("list or watch objects of kind {kind}"),
                    Vec::new(),
                    None,
                    vec![ok(&list)],
                    PRODUCES_LIST,
                    gvk.clone(),
                )],
            });
        }

        // The deprecated watch paths upstream still publishes.
        if r.has_verb(Verb::Watch) {
            let watch_event = Body::Def(WATCH_EVENT.into());
            let watch_root = if r.namespaced {
                format!("{root}/watch/namespaces/{{namespace}}/{}", r.plural)
            } else {
                format!("{root}/watch/{}", r.plural)
            };
            let mut p = list_params();
            p.push(pretty());
            out.push(PathItem {
                path: watch_root.clone(),
                params: scoped(p.clone()),
                ops: vec![self.op("get", "watchlist", format!("watch{gv}{scope}{kind}List"), format!("watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."), Vec::new(), None, vec![ok(&watch_event)], PRODUCES_LIST, gvk.clone())],
            });
            let mut item_params = vec![name_param()];
            item_params = scoped(item_params);
            item_params.extend(p.iter().cloned());
            out.push(PathItem {
                path: format!("{watch_root}/{{name}}"),
                params: item_params,
                ops: vec![self.op("get", "watch", format!("watch{gv}{scope}{kind}"), format!("watch changes to an object of kind {kind}. deprecated: use the 'watch' parameter with a list operation instead, filtered to a single item with the 'fieldSelector' parameter."), Vec::new(), None, vec![ok(&watch_event)], PRODUCES_LIST, gvk.clone())],
            });
            if r.namespaced {
                out.push(PathItem {
                    path: format!("{root}/watch/{}", r.plural),
                    params: p,
                    ops: vec![self.op("get", "watchlist", format!("watch{gv}{kind}ListForAllNamespaces"), format!("watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."), Vec::new(), None, vec![ok(&watch_event)], PRODUCES_LIST, gvk.clone())],
                });
            }
        }

        for s in r.subresources {
            self.subresource(r, s, &item, out);
        }
    }

    fn subresource(&self, r: &ResourceInfo, s: &Subresource, item: &str, out: &mut Vec<PathItem>) {
        let gv = &self.gv_word;
        let kind = r.kind;
        let scope = if r.namespaced { "Namespaced" } else { "" };
        let sub_word = capitalize(s.name);
        let sub_group = s.group.unwrap_or(r.group);
        let sub_version = s.version.unwrap_or(r.version);
        let mut params = vec![path_param(
            "name",
            format!("name of the {}", name_kind(s, r)),
        )];
        if r.namespaced {
            params.push(path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects".into(),
            ));
        }
        let verbs = |v: Verb| s.verbs.contains(&v);
        let mut ops = Vec::new();
        let connect = matches!(s.name, "exec" | "attach" | "portforward" | "proxy");

        if connect {
            // Streams: upstream documents them as `connect` actions answering text.
            params.extend(connect_params(s.name));
            let gvk = self.gvk(sub_group, sub_version, s.kind);
            for (verb, method) in [
                (Verb::Get, "get"),
                (Verb::Create, "post"),
                (Verb::Update, "put"),
                (Verb::Patch, "patch"),
                (Verb::Delete, "delete"),
            ] {
                if verbs(verb) {
                    let word = capitalize(method);
                    ops.push(self.op(
                        method,
                        "connect",
                        format!("connect{gv}{word}{scope}{kind}{sub_word}"),
                        format!(
                            "connect {} requests to {} of {kind}",
                            method.to_uppercase(),
                            s.name
                        ),
                        Vec::new(),
                        None,
                        vec![ok(&Body::Text)],
                        ANY,
                        gvk.clone(),
                    ));
                }
            }
            out.push(PathItem {
                path: format!("{item}/{}", s.name),
                params,
                ops,
            });
            if s.name == "proxy" {
                let mut with_path = Vec::new();
                for op in &out.last().map(|p| p.ops.clone()).unwrap_or_default() {
                    let mut op = op.clone();
                    op.operation_id.push_str("WithPath");
                    op.params.clear();
                    with_path.push(op);
                }
                let mut p: Vec<Param> = vec![path_param(
                    "name",
                    format!("name of the {}", name_kind(s, r)),
                )];
                if r.namespaced {
                    p.push(path_param(
                        "namespace",
                        "object name and auth scope, such as for teams and projects".into(),
                    ));
                }
                p.push(path_param("path", "path to the resource".into()));
                p.extend(connect_params("proxy"));
                out.push(PathItem {
                    path: format!("{item}/proxy/{{path}}"),
                    params: p,
                    ops: with_path,
                });
            }
            return;
        }

        params.push(pretty());
        if s.name == "log" {
            ops.push(self.op(
                "get",
                "get",
                format!("read{gv}{scope}{kind}Log"),
                format!("read log of the specified {kind}"),
                log_params(),
                None,
                vec![ok(&Body::Text)],
                PRODUCES_LOG,
                self.gvk(r.group, r.version, kind),
            ));
            out.push(PathItem {
                path: format!("{item}/log"),
                params,
                ops,
            });
            return;
        }

        // status, scale, finalize, binding, eviction, token: typed bodies.
        let body = self.def(sub_group, sub_version, s.kind);
        let gvk = self.gvk(sub_group, sub_version, s.kind);
        let of = |what: &str| format!("{what} {} of the specified {kind}", s.name);
        if verbs(Verb::Get) {
            ops.push(self.op(
                "get",
                "get",
                format!("read{gv}{scope}{kind}{sub_word}"),
                of("read"),
                Vec::new(),
                None,
                vec![ok(&body)],
                PRODUCES,
                gvk.clone(),
            ));
        }
        if verbs(Verb::Update) {
            ops.push(self.op(
                "put",
                "put",
                format!("replace{gv}{scope}{kind}{sub_word}"),
                of("replace"),
                write_params(),
                Some((body.clone(), ANY)),
                vec![ok(&body), created(&body)],
                PRODUCES,
                gvk.clone(),
            ));
        }
        if verbs(Verb::Patch) {
            ops.push(self.op(
                "patch",
                "patch",
                format!("patch{gv}{scope}{kind}{sub_word}"),
                of("partially update"),
                patch_params(),
                Some((Body::Def(PATCH.into()), PATCH_TYPES)),
                vec![ok(&body), created(&body)],
                PRODUCES,
                gvk.clone(),
            ));
        }
        if verbs(Verb::Create) {
            ops.push(self.op(
                "post",
                "post",
                format!("create{gv}{scope}{kind}{sub_word}"),
                format!("create {} of a {kind}", s.name),
                write_params(),
                Some((body.clone(), ANY)),
                vec![ok(&body), created(&body), accepted(&body)],
                PRODUCES,
                gvk.clone(),
            ));
        }
        if verbs(Verb::Delete) {
            ops.push(self.op(
                "delete",
                "delete",
                format!("delete{gv}{scope}{kind}{sub_word}"),
                format!("delete {} of a {kind}", s.name),
                delete_params(),
                Some((Body::Def(DELETE_OPTIONS.into()), ANY)),
                vec![ok(&Body::Def(STATUS.into()))],
                PRODUCES,
                gvk.clone(),
            ));
        }
        out.push(PathItem {
            path: format!("{item}/{}", s.name),
            params,
            ops,
        });
    }
}

/// What the `name` parameter of a subresource path describes, as upstream words it: the
/// subresource's own kind where it has a schema, the parent's otherwise.
fn name_kind(s: &Subresource, parent: &ResourceInfo) -> &'static str {
    match s.name {
        "binding" | "eviction" | "token" | "scale" => s.kind,
        _ => parent.kind,
    }
}

/// Every path item of one group-version, in table order, starting with the group-version's
/// discovery document.
pub(crate) fn group_version_paths(defs: &Definitions, group: &str, version: &str) -> Vec<PathItem> {
    let gv_word = format!("{}{}", group_word(group), capitalize(version));
    let builder = Builder {
        defs,
        group,
        version,
        gv_word: gv_word.clone(),
        tag: tag(group, version),
    };
    let mut out = vec![PathItem {
        path: format!("{}/", root(group, version)),
        params: Vec::new(),
        ops: vec![builder.op(
            "get",
            "get",
            format!("get{gv_word}APIResources"),
            format!("get available resources of {}", api_version(group, version)),
            Vec::new(),
            None,
            vec![ok(&Body::Def(API_RESOURCE_LIST.into()))],
            &[
                "application/json",
                "application/yaml",
                "application/vnd.kubernetes.protobuf",
            ],
            None,
        )],
    }];
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        builder.resource(r, &mut out);
    }
    out
}

/// The definitions a path item references.
pub(crate) fn referenced_definitions(items: &[PathItem]) -> Vec<&str> {
    let mut out = Vec::new();
    for item in items {
        for op in &item.ops {
            if let Some((Body::Def(d), _)) = &op.body {
                out.push(d.as_str());
            }
            for r in &op.responses {
                if let Body::Def(d) = &r.body {
                    out.push(d.as_str());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_tags() {
        assert_eq!(group_word(""), "Core");
        assert_eq!(group_word("apps"), "Apps");
        assert_eq!(group_word("rbac.authorization.k8s.io"), "RbacAuthorization");
        assert_eq!(group_word("coordination.k8s.io"), "Coordination");
        assert_eq!(
            tag("rbac.authorization.k8s.io", "v1"),
            "rbacAuthorization_v1"
        );
        assert_eq!(tag("", "v1"), "core_v1");
        assert_eq!(v3_key("", "v1"), "api/v1");
        assert_eq!(v3_key("apps", "v1"), "apis/apps/v1");
    }

    #[test]
    fn deployment_operations() {
        let defs = Definitions::build();
        let items = group_version_paths(&defs, "apps", "v1");
        let item = items
            .iter()
            .find(|p| p.path == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
            .expect("item path");
        let ids: Vec<_> = item.ops.iter().map(|o| o.operation_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "readAppsV1NamespacedDeployment",
                "replaceAppsV1NamespacedDeployment",
                "patchAppsV1NamespacedDeployment",
                "deleteAppsV1NamespacedDeployment"
            ]
        );
        let scale = items
            .iter()
            .find(|p| p.path.ends_with("deployments/{name}/scale"))
            .expect("scale");
        let patch = scale
            .ops
            .iter()
            .find(|o| o.method == "patch")
            .expect("patch");
        assert_eq!(
            patch.gvk,
            Some(("autoscaling".into(), "v1".into(), "Scale".into()))
        );
        assert!(items.iter().any(|p| p.path == "/apis/apps/v1/deployments"));
        assert!(items
            .iter()
            .any(|p| p.path == "/apis/apps/v1/watch/namespaces/{namespace}/deployments/{name}"));
    }

    #[test]
    fn paths_are_unique() {
        let defs = Definitions::build();
        for (group, versions) in api_types::resources::groups() {
            for version in versions {
                let items = group_version_paths(&defs, group, version);
                let mut seen = std::collections::HashSet::new();
                for item in &items {
                    assert!(seen.insert(item.path.as_str()), "duplicate {}", item.path);
                    let mut methods = std::collections::HashSet::new();
                    for op in &item.ops {
                        assert!(methods.insert(op.method), "{} {}", op.method, item.path);
                    }
                }
            }
        }
    }

    #[test]
    fn pod_subresources() {
        let defs = Definitions::build();
        let items = group_version_paths(&defs, "", "v1");
        let find = |suffix: &str| {
            items
                .iter()
                .find(|p| {
                    p.path == format!("/api/v1/namespaces/{{namespace}}/pods/{{name}}{suffix}")
                })
                .unwrap_or_else(|| panic!("{suffix}"))
        };
        assert_eq!(
            find("/exec").ops[0].operation_id,
            "connectCoreV1GetNamespacedPodExec"
        );
        assert_eq!(
            find("/log").ops[0].operation_id,
            "readCoreV1NamespacedPodLog"
        );
        let eviction = &find("/eviction").ops[0];
        assert_eq!(eviction.operation_id, "createCoreV1NamespacedPodEviction");
        assert_eq!(
            eviction.body.as_ref().map(|b| b.0.clone()),
            Some(Body::Def("io.k8s.api.policy.v1.Eviction".into()))
        );
        assert!(items
            .iter()
            .any(|p| p.path == "/api/v1/namespaces/{namespace}/pods/{name}/proxy/{path}"));
        let ns = items
            .iter()
            .find(|p| p.path == "/api/v1/namespaces/{name}/finalize")
            .expect("finalize");
        assert_eq!(ns.ops[0].operation_id, "replaceCoreV1NamespaceFinalize");
    }
}
