//! One sample schema for a whole dataset, from the schemas of its shards.
//!
//! The rules differ by format because the formats promise different things:
//! - **Parquet** shards carry a schema; every shard must have the same field names and types as
//!   the first shard (in manifest order). Nullability may differ: the dataset field is nullable if
//!   any shard's is.
//! - **WebDataset tar** samples are bags of files; a field (file extension) missing from some
//!   shards is simply optional, so the dataset schema is the union, nullable where not universal.
//! - **JSONL** types are inferred; integer and float widen to float, and null gives way to any type.
//!   Other conflicts are errors.
//!
//! Mixing formats in one dataset is an error: index them as separate streams and mix them in
//! the planner instead.

use crate::error::{Error, Result};
use crate::format::ShardFormat;
use crate::manifest::ShardEntry;
use arrow_schema::{DataType, Field, Schema};
use std::collections::BTreeMap;

/// The dataset schema, plus (index, reason) of each shard rejected under `skip_bad`.
pub type Reconciled = (Schema, Vec<(usize, String)>);

/// Reconciles shard schemas. `shards[i].1` is `None` for shards reused from a previous manifest,
/// whose schema was `previous`.
pub fn reconcile(
    shards: &[(ShardEntry, Option<Schema>)],
    displays: &[String],
    previous: Option<&Schema>,
    skip_bad: bool,
) -> Result<Reconciled> {
    let mut rejected = Vec::new();
    let mut acc: Option<(ShardFormat, Schema, String)> = None;
    let reused = shards.iter().position(|(_, s)| s.is_none());
    if let (Some(i), Some(prev)) = (reused, previous) {
        acc = Some((
            shards[i].0.kind.format,
            prev.clone(),
            "the previous manifest".into(),
        ));
    }
    for (i, (entry, schema)) in shards.iter().enumerate() {
        let Some(schema) = schema else { continue };
        let format = entry.kind.format;
        let merged = match &acc {
            None => Ok(normalise(format, schema)),
            Some((f, _, first)) if *f != format => Err((
                first.clone(),
                format!("it is a {format:?} shard in a {f:?} dataset"),
            )),
            Some((_, base, first)) => merge(format, base, schema).map_err(|d| (first.clone(), d)),
        };
        match merged {
            Ok(s) => {
                let first = acc
                    .as_ref()
                    .map_or_else(|| displays[i].clone(), |a| a.2.clone());
                acc = Some((format, s, first));
            }
            Err((first, detail)) if skip_bad => {
                rejected.push((i, format!("schema differs from {first}: {detail}")));
            }
            Err((first, detail)) => {
                return Err(Error::SchemaMismatch {
                    path: displays[i].clone(),
                    first,
                    detail,
                })
            }
        }
    }
    let schema = acc
        .map(|(_, s, _)| s)
        .or_else(|| previous.cloned())
        .unwrap_or_else(Schema::empty);
    Ok((schema, rejected))
}

fn normalise(format: ShardFormat, schema: &Schema) -> Schema {
    match format {
        ShardFormat::Tar => schema.clone(),
        _ => Schema::new(schema.fields().clone()),
    }
}

fn merge(format: ShardFormat, base: &Schema, next: &Schema) -> std::result::Result<Schema, String> {
    match format {
        ShardFormat::Parquet => merge_exact(base, next),
        ShardFormat::Tar => Ok(merge_union(base, next)),
        ShardFormat::Jsonl => merge_json(base, next),
    }
}

fn merge_exact(base: &Schema, next: &Schema) -> std::result::Result<Schema, String> {
    let names = |s: &Schema| {
        s.fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    if names(base) != names(next) {
        return Err(format!("columns {:?} vs {:?}", names(next), names(base)));
    }
    let mut fields = Vec::with_capacity(base.fields().len());
    for (a, b) in base.fields().iter().zip(next.fields().iter()) {
        if !same_type_ignoring_nullability(a.data_type(), b.data_type()) {
            return Err(format!(
                "column {:?} is {} here but {} there",
                a.name(),
                b.data_type(),
                a.data_type()
            ));
        }
        fields.push(
            a.as_ref()
                .clone()
                .with_nullable(a.is_nullable() || b.is_nullable()),
        );
    }
    Ok(Schema::new(fields))
}

/// Types equal up to nested fields' nullability and names (writers disagree on "item"/"element").
fn same_type_ignoring_nullability(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::List(x), DataType::List(y))
        | (DataType::LargeList(x), DataType::LargeList(y)) => {
            same_type_ignoring_nullability(x.data_type(), y.data_type())
        }
        (DataType::FixedSizeList(x, n), DataType::FixedSizeList(y, m)) => {
            n == m && same_type_ignoring_nullability(x.data_type(), y.data_type())
        }
        (DataType::Struct(x), DataType::Struct(y)) => {
            x.len() == y.len()
                && x.iter().zip(y.iter()).all(|(p, q)| {
                    p.name() == q.name()
                        && same_type_ignoring_nullability(p.data_type(), q.data_type())
                })
        }
        _ => a == b,
    }
}

fn merge_union(base: &Schema, next: &Schema) -> Schema {
    let mut fields: BTreeMap<String, Field> = BTreeMap::new();
    let key = "__key__";
    for f in base.fields() {
        let present = next.field_with_name(f.name()).ok();
        let nullable = f.is_nullable() || present.is_none_or(|g| g.is_nullable());
        fields.insert(f.name().clone(), f.as_ref().clone().with_nullable(nullable));
    }
    for f in next.fields() {
        fields
            .entry(f.name().clone())
            .or_insert_with(|| f.as_ref().clone().with_nullable(true));
    }
    let mut out: Vec<Field> = Vec::with_capacity(fields.len());
    if let Some(k) = fields.remove(key) {
        out.push(k);
    }
    out.extend(fields.into_values());
    Schema::new(out)
}

fn merge_json(base: &Schema, next: &Schema) -> std::result::Result<Schema, String> {
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    for f in next.fields() {
        match fields.iter_mut().find(|g| g.name() == f.name()) {
            Some(g) => {
                let t = widen(g.data_type(), f.data_type()).ok_or_else(|| {
                    format!(
                        "field {:?} is {} here but {} there",
                        f.name(),
                        f.data_type(),
                        g.data_type()
                    )
                })?;
                *g = Field::new(g.name(), t, true);
            }
            None => fields.push(f.as_ref().clone().with_nullable(true)),
        }
    }
    Ok(Schema::new(fields))
}

fn widen(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType::*;
    match (a, b) {
        _ if a == b => Some(a.clone()),
        (Null, t) | (t, Null) => Some(t.clone()),
        (Int64, Float64) | (Float64, Int64) => Some(Float64),
        (List(x), List(y)) => {
            let t = widen(x.data_type(), y.data_type())?;
            Some(List(std::sync::Arc::new(Field::new(x.name(), t, true))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Compression, ShardKind};

    fn entry(path: &str, format: ShardFormat) -> ShardEntry {
        ShardEntry {
            source: 0,
            path: path.into(),
            size: 1,
            etag: None,
            version: None,
            last_modified_ms: None,
            kind: ShardKind::new(format, Compression::None),
            num_samples: 1,
            row_groups: vec![],
        }
    }

    fn run(shards: Vec<(ShardEntry, Option<Schema>)>, skip: bool) -> Result<Reconciled> {
        let displays: Vec<String> = shards.iter().map(|s| s.0.path.clone()).collect();
        reconcile(&shards, &displays, None, skip)
    }

    #[test]
    fn parquet_schemas_must_agree() {
        let a = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
        let b = Schema::new(vec![Field::new("id", DataType::Utf8, false)]);
        let c = Schema::new(vec![Field::new("id", DataType::Int64, true)]);
        let shards = vec![
            (entry("a", ShardFormat::Parquet), Some(a.clone())),
            (entry("b", ShardFormat::Parquet), Some(c)),
        ];
        let (s, rejected) = run(shards, false).unwrap();
        assert!(rejected.is_empty());
        assert!(s.field(0).is_nullable());
        let shards = vec![
            (entry("a", ShardFormat::Parquet), Some(a.clone())),
            (entry("b", ShardFormat::Parquet), Some(b.clone())),
        ];
        let err = run(shards.clone(), false).unwrap_err();
        assert!(err.to_string().contains("b"), "{err}");
        let (_, rejected) = run(shards, true).unwrap();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].0, 1);
    }

    #[test]
    fn tar_fields_union_and_become_optional() {
        let a = Schema::new(vec![
            Field::new("__key__", DataType::Utf8, false),
            Field::new("jpg", DataType::Binary, false),
        ]);
        let b = Schema::new(vec![
            Field::new("__key__", DataType::Utf8, false),
            Field::new("cls", DataType::Binary, false),
            Field::new("jpg", DataType::Binary, false),
        ]);
        let (s, _) = run(
            vec![
                (entry("a", ShardFormat::Tar), Some(a)),
                (entry("b", ShardFormat::Tar), Some(b)),
            ],
            false,
        )
        .unwrap();
        let names: Vec<_> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["__key__", "cls", "jpg"]);
        assert!(s.field_with_name("cls").unwrap().is_nullable());
        assert!(!s.field_with_name("jpg").unwrap().is_nullable());
    }

    #[test]
    fn json_widens_numbers_and_rejects_conflicts() {
        let a = Schema::new(vec![Field::new("x", DataType::Int64, true)]);
        let b = Schema::new(vec![Field::new("x", DataType::Float64, true)]);
        let c = Schema::new(vec![Field::new("x", DataType::Utf8, true)]);
        let (s, _) = run(
            vec![
                (entry("a", ShardFormat::Jsonl), Some(a.clone())),
                (entry("b", ShardFormat::Jsonl), Some(b)),
            ],
            false,
        )
        .unwrap();
        assert_eq!(s.field(0).data_type(), &DataType::Float64);
        assert!(run(
            vec![
                (entry("a", ShardFormat::Jsonl), Some(a)),
                (entry("c", ShardFormat::Jsonl), Some(c)),
            ],
            false
        )
        .is_err());
    }

    #[test]
    fn mixed_formats_are_refused() {
        let a = Schema::new(vec![Field::new("x", DataType::Int64, true)]);
        let err = run(
            vec![
                (entry("a", ShardFormat::Parquet), Some(a.clone())),
                (entry("b", ShardFormat::Jsonl), Some(a)),
            ],
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("Jsonl"), "{err}");
    }
}
