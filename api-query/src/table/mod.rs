//! Server-side printing: `meta.k8s.io/v1` `Table` responses for
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! kubectl asks every `get` for a Table and prints the server's columns verbatim (adding
//! NAMESPACE for `-A` and LABELS for `--show-labels` from the row objects), so columns and cell
//! values follow kube-apiserver's printers (`pkg/printers/internalversion/printers.go`) cell for
//! cell. The server always renders the wide (`-o wide`) cells; the client hides columns whose
//! priority is above zero unless asked. Kinds without a printer get upstream's default table:
//! Name and Created At.

mod corev1;
mod descriptions;
mod other;
mod pod;
mod util;
mod workloads;

use std::time::{SystemTime, UNIX_EPOCH};

use api_types::k8s_openapi::jiff::Timestamp;
use api_types::ResourceInfo;
use serde_json::{json, Map, Value};

use self::descriptions as d;
use self::util::{s, ts, Ctx};

/// What each row's `object` carries (the `includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object: rows carry only cells.
    None,
    /// A `PartialObjectMetadata` with the object's metadata; the default, and what kubectl
    /// needs for `-A` and `--show-labels`.
    #[default]
    Metadata,
    /// The whole object; kubectl asks for this with `--sort-by`.
    Object,
}

impl IncludeObject {
    /// Parses the query parameter value; an absent or empty value is `Metadata`. `None` means
    /// the value is unknown, which upstream answers with 400 `unrecognized includeObject
    /// value: "<value>"`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "" | "Metadata" => Some(IncludeObject::Metadata),
            "None" => Some(IncludeObject::None),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

/// Which `meta.k8s.io` version the client negotiated for the Table; kubectl lists `v1` first,
/// older clients only accept `v1beta1`. The shape is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableVersion {
    /// `meta.k8s.io/v1`.
    #[default]
    V1,
    /// `meta.k8s.io/v1beta1`.
    V1Beta1,
}

impl TableVersion {
    /// The `apiVersion` of the Table and of the row `PartialObjectMetadata` objects.
    pub fn api_version(self) -> &'static str {
        match self {
            TableVersion::V1 => "meta.k8s.io/v1",
            TableVersion::V1Beta1 => "meta.k8s.io/v1beta1",
        }
    }
}

/// How to render a Table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOptions {
    /// What each row's `object` carries.
    pub include_object: IncludeObject,
    /// Leave out `columnDefinitions`: the client asked (`TableOptions.noHeaders`), or this is a
    /// watch event after the first, which upstream sends without headers.
    pub no_headers: bool,
    /// The instant AGE and other relative cells are measured from.
    pub now: Timestamp,
    /// The negotiated Table version.
    pub version: TableVersion,
    /// `metadata.resourceVersion` of the Table: the list's (or the single object's).
    pub resource_version: Option<String>,
    /// `metadata.continue` of the Table when the list is paginated.
    pub continue_token: Option<String>,
    /// `metadata.remainingItemCount` of the Table when the list is paginated.
    pub remaining_item_count: Option<i64>,
}

impl TableOptions {
    /// Defaults (metadata objects, headers, v1, no list metadata) measured from `now`.
    pub fn at(now: Timestamp) -> Self {
        TableOptions {
            include_object: IncludeObject::Metadata,
            no_headers: false,
            now,
            version: TableVersion::V1,
            resource_version: None,
            continue_token: None,
            remaining_item_count: None,
        }
    }
}

/// The current time as a [`Timestamp`], for [`TableOptions::now`]. Read from `SystemTime` so
/// it works whatever features the shared `jiff` build has; a clock before 1970 reads as the
/// epoch.
pub fn current_time() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    // subsec_nanos is below 1e9, so it always fits an i32.
    let nanos = i32::try_from(since.subsec_nanos()).unwrap_or(0);
    Timestamp::new(secs, nanos).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// One column of a Table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnDefinition {
    /// Header text; kubectl upper-cases it.
    pub name: &'static str,
    /// OpenAPI type of the cells: `string`, `integer`, `boolean`, `date`, ...
    pub type_: &'static str,
    /// `name` for the column holding the object name, else empty.
    pub format: &'static str,
    /// What the column shows.
    pub description: &'static str,
    /// 0 for default columns, 1 for `-o wide` ones.
    pub priority: i32,
}

impl ColumnDefinition {
    fn to_json(self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// Shorthand for the column tables below.
pub(crate) const fn col(
    name: &'static str,
    type_: &'static str,
    description: &'static str,
    priority: i32,
) -> ColumnDefinition {
    ColumnDefinition {
        name,
        type_,
        format: "",
        description,
        priority,
    }
}

/// The Name column every printer starts with (events put it last, in the wide set).
pub(crate) const NAME: ColumnDefinition = ColumnDefinition {
    name: "Name",
    type_: "string",
    format: "name",
    description: d::OBJECT_META_NAME,
    priority: 0,
};

/// The Age column.
pub(crate) const AGE: ColumnDefinition = col("Age", "string", d::OBJECT_META_CREATION_TIMESTAMP, 0);

/// The cells of one row, and upstream's row conditions (pods that finished carry a `Completed`
/// condition).
pub(crate) struct Row {
    pub cells: Vec<Value>,
    pub conditions: Option<Value>,
}

impl From<Vec<Value>> for Row {
    fn from(cells: Vec<Value>) -> Self {
        Row {
            cells,
            conditions: None,
        }
    }
}

/// A kind's printer: its columns and how to fill a row.
pub(crate) struct Printer {
    pub columns: &'static [ColumnDefinition],
    pub row: fn(&Value, &Ctx) -> Row,
}

const DEFAULT_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Created At", "date", d::OBJECT_META_CREATION_TIMESTAMP, 0),
];

/// Upstream's default table convertor row: the name and the creation time in RFC 3339 (UTC,
/// whole seconds; the zero time when unset).
fn default_row(obj: &Value, _ctx: &Ctx) -> Row {
    let created = ts(obj, "/metadata/creationTimestamp")
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
    vec![json!(s(obj, "/metadata/name")), json!(created)].into()
}

const DEFAULT_PRINTER: Printer = Printer {
    columns: DEFAULT_COLUMNS,
    row: default_row,
};

fn printer_for(group: &str, kind: &str) -> &'static Printer {
    pod::printer(group, kind)
        .or_else(|| workloads::printer(group, kind))
        .or_else(|| corev1::printer(group, kind))
        .or_else(|| other::printer(group, kind))
        .unwrap_or(&DEFAULT_PRINTER)
}

/// The columns kube-apiserver defines for the resource, wide ones included.
pub fn column_definitions(info: &ResourceInfo) -> &'static [ColumnDefinition] {
    printer_for(info.group, info.kind).columns
}

/// Renders `items` (objects of the resource `info`, as stored) as a `Table`.
///
/// A single-object GET passes a one-element slice and the object's resourceVersion in
/// `opts.resource_version`; a list passes its items and list metadata; a watch event passes
/// one object with `no_headers` set after the first event.
pub fn to_table(info: &ResourceInfo, items: &[Value], opts: &TableOptions) -> Value {
    let printer = printer_for(info.group, info.kind);
    let ctx = Ctx { now: opts.now };
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let row = (printer.row)(item, &ctx);
            let mut out = Map::new();
            out.insert("cells".into(), Value::Array(row.cells));
            if let Some(conditions) = row.conditions {
                out.insert("conditions".into(), conditions);
            }
            if let Some(object) = row_object(info, item, opts) {
                out.insert("object".into(), object);
            }
            Value::Object(out)
        })
        .collect();

    let mut metadata = Map::new();
    if let Some(rv) = opts.resource_version.as_deref().filter(|v| !v.is_empty()) {
        metadata.insert("resourceVersion".into(), json!(rv));
    }
    if let Some(c) = opts.continue_token.as_deref().filter(|v| !v.is_empty()) {
        metadata.insert("continue".into(), json!(c));
    }
    if let Some(n) = opts.remaining_item_count {
        metadata.insert("remainingItemCount".into(), json!(n));
    }

    let mut table = Map::new();
    table.insert("kind".into(), json!("Table"));
    table.insert("apiVersion".into(), json!(opts.version.api_version()));
    table.insert("metadata".into(), Value::Object(metadata));
    if !opts.no_headers {
        table.insert(
            "columnDefinitions".into(),
            Value::Array(printer.columns.iter().map(|c| c.to_json()).collect()),
        );
    }
    table.insert("rows".into(), Value::Array(rows));
    Value::Object(table)
}

/// The row's `object` per `includeObject`: nothing, a `PartialObjectMetadata`, or the object
/// itself with `kind`/`apiVersion` filled in (list items are stored without them).
fn row_object(info: &ResourceInfo, item: &Value, opts: &TableOptions) -> Option<Value> {
    match opts.include_object {
        IncludeObject::None => None,
        IncludeObject::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": opts.version.api_version(),
            "metadata": item.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
        IncludeObject::Object => {
            let mut obj = item.clone();
            if let Some(map) = obj.as_object_mut() {
                map.entry("kind").or_insert_with(|| json!(info.kind));
                map.entry("apiVersion")
                    .or_insert_with(|| json!(info.api_version()));
            }
            Some(obj)
        }
    }
}
