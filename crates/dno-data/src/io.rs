//! Parquet I/O shared by every stage: streaming, validating readers and atomic writers.
//!
//! Inputs can be one file, several files, or directories of shards (`part-*.parquet`), read a
//! record batch at a time. Outputs go to a temporary file in the destination folder and are
//! renamed into place only when complete; an existing output is never replaced without `force`.

use crate::provenance::{is_temp_name, Provenance};
use crate::rows::Row;
use crate::schema::{Dataset, META_PROVENANCE, META_SCHEMA, META_VERSION};
use crate::shard::{parse_meta, ShardSet, META_SHARD};
use anyhow::{anyhow, bail, Context, Result};
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::{Field, FieldRef, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rows per record batch when reading.
pub const READ_BATCH_ROWS: usize = 4096;
/// Rows per Parquet row group when writing.
pub const ROW_GROUP_ROWS: usize = 16_384;

/// Expand the user's input arguments into a sorted list of Parquet files.
/// A directory contributes its `part-*.parquet` files (or, failing that, all `*.parquet`).
pub fn resolve_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        bail!("no input files given");
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("{}: cannot list directory", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && !is_temp_name(f) && f.extension().is_some_and(|e| e == "parquet"))
                .collect();
            let parts: Vec<PathBuf> = files
                .iter()
                .filter(|f| f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("part-")))
                .cloned()
                .collect();
            if !parts.is_empty() {
                files = parts;
            }
            files.sort();
            if files.is_empty() {
                bail!("{}: directory holds no .parquet files", p.display());
            }
            out.extend(files);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("{}: no such file or directory", p.display());
        }
    }
    Ok(out)
}

/// Key-value metadata of a Parquet file.
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| anyhow!("{}: not a valid Parquet file (truncated or corrupt?): {e}", path.display()))?;
    let mut map = BTreeMap::new();
    if let Some(kvs) = builder.metadata().file_metadata().key_value_metadata() {
        for kv in kvs {
            if let Some(v) = &kv.value {
                map.insert(kv.key.clone(), v.clone());
            }
        }
    }
    Ok(map)
}

/// Provenance stored in a file written by `dno`, if any.
pub fn read_provenance(path: &Path) -> Result<Option<Provenance>> {
    match read_metadata(path)?.get(META_PROVENANCE) {
        Some(s) => Ok(Some(
            serde_json::from_str(s).with_context(|| format!("{}: metadata key {META_PROVENANCE} is not valid JSON", path.display()))?,
        )),
        None => Ok(None),
    }
}

/// A validated, streaming reader over one dataset spread across one or more files.
pub struct DatasetReader {
    dataset: Dataset,
    files: Vec<PathBuf>,
    /// Schema version of each file (the current one for files without `dno` metadata).
    versions: Vec<u32>,
    rows: u64,
    file_rows: Vec<u64>,
    /// Set when the files are `--shard` outputs (see [`crate::shard`]).
    shards: Option<ShardSet>,
}

impl DatasetReader {
    /// Resolve the inputs and check every file's footer and schema (cheap: metadata only), and,
    /// for shard outputs, that they form one run's shards (all N of them, unless a single shard
    /// file is given on its own).
    pub fn open(dataset: Dataset, paths: &[PathBuf]) -> Result<Self> {
        let single_file = paths.len() == 1 && paths[0].is_file();
        Self::open_checked(dataset, paths, !single_file)
    }

    /// [`DatasetReader::open`] for a stage run as `shard` (None: unsharded): when the inputs are
    /// shard outputs of the same N, only shard I's file is read, and the other shards need not
    /// exist yet (shard I of the next stage can start as soon as shard I of this one is done).
    pub fn open_for_shard(dataset: Dataset, paths: &[PathBuf], shard: Option<crate::shard::Shard>) -> Result<Self> {
        let Some(shard) = shard else { return Self::open(dataset, paths) };
        let r = Self::open_checked(dataset, paths, false)?;
        match &r.shards {
            Some(set) if set.count() == shard.count && (0..r.files.len()).any(|i| set.shard_of_file(i) == shard) => Ok(r.only_shard(shard)),
            _ => Self::open(dataset, paths),
        }
    }

    fn open_checked(dataset: Dataset, paths: &[PathBuf], complete: bool) -> Result<Self> {
        let files = resolve_inputs(paths)?;
        let mut file_rows = Vec::with_capacity(files.len());
        let mut metas = Vec::with_capacity(files.len());
        let mut versions = Vec::with_capacity(files.len());
        for f in &files {
            let (n, version, shard) = check_file_schema(dataset, f)?;
            file_rows.push(n);
            versions.push(version);
            metas.push(shard.map(|v| parse_meta(f, &v)).transpose()?);
        }
        let shards = ShardSet::check(&files, metas, complete)?;
        Ok(DatasetReader { dataset, files, versions, rows: file_rows.iter().sum(), file_rows, shards })
    }

    /// The shard set, when the files are `--shard` outputs.
    pub fn shards(&self) -> Option<&ShardSet> {
        self.shards.as_ref()
    }

    /// Only the file of shard `shard`, when the files are shards of the same N; otherwise `self`
    /// unchanged.
    fn only_shard(self, shard: crate::shard::Shard) -> Self {
        let Some(set) = &self.shards else { return self };
        let keep: Vec<usize> = (0..self.files.len()).filter(|&i| set.shard_of_file(i) == shard).collect();
        if set.count() != shard.count || keep.len() != 1 {
            return self;
        }
        let fi = keep[0];
        DatasetReader { dataset: self.dataset, files: vec![self.files[fi].clone()], versions: vec![self.versions[fi]], rows: self.file_rows[fi], file_rows: vec![self.file_rows[fi]], shards: Some(set.only_file(fi)) }
    }

    pub fn dataset(&self) -> Dataset {
        self.dataset
    }
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
    /// Schema version of each file, in [`Self::files`] order.
    pub fn versions(&self) -> &[u32] {
        &self.versions
    }
    /// Row count from the footers.
    pub fn num_rows(&self) -> u64 {
        self.rows
    }

    /// Full validation pass over the data (streamed): nulls in non-null columns, values outside
    /// [0, 1] where a probability is expected, and duplicate keys across all files. The key set
    /// is the only state that grows with the input (16 bytes per row).
    pub fn validate(&self) -> Result<()> {
        let key_cols = self.dataset.key();
        let mut seen: HashMap<u128, (usize, u64)> = HashMap::new();
        for (fi, file) in self.files.iter().enumerate() {
            let mut row0 = 0u64;
            for batch in batches_of(self.dataset, file)? {
                let batch = batch?;
                check_nulls(self.dataset, self.versions[fi], file, &batch, row0)?;
                check_unit_interval(self.dataset, file, &batch, row0)?;
                check_history(self.dataset, file, &batch, row0)?;
                if let Some(set) = &self.shards {
                    let ids = string_col(&batch, "prompt_id")?;
                    for i in 0..batch.num_rows() {
                        set.check_row(file, fi, row0 + i as u64, ids.value(i))?;
                    }
                }
                // Key columns as text (`metrics` is keyed by its int64 `step`).
                let key_text: Vec<ArrayRef> = key_cols
                    .iter()
                    .map(|k| {
                        let a = batch.column_by_name(k).expect("normalised batch has every column");
                        arrow_cast::cast(a, &arrow_schema::DataType::Utf8).map_err(|e| anyhow!("{}: key column '{k}': {e}", file.display()))
                    })
                    .collect::<Result<_>>()?;
                let keys: Vec<&StringArray> = key_text.iter().map(|a| a.as_any().downcast_ref::<StringArray>().expect("cast to utf8")).collect();
                for i in 0..batch.num_rows() {
                    let mut h = sha2::Sha256::new();
                    use sha2::Digest;
                    for k in &keys {
                        h.update(k.value(i).as_bytes());
                        h.update([0u8]);
                    }
                    let d = h.finalize();
                    let id = u128::from_le_bytes(d[..16].try_into().unwrap());
                    let row = row0 + i as u64;
                    if let Some((pf, pr)) = seen.insert(id, (fi, row)) {
                        let key: Vec<String> = keys.iter().map(|k| k.value(i).to_string()).collect();
                        bail!(
                            "{}: row {row}: duplicate {} '{}' (first seen in {} row {pr})",
                            file.display(),
                            key_cols.join("+"),
                            key.join("+"),
                            self.files[pf].display()
                        );
                    }
                }
                row0 += batch.num_rows() as u64;
            }
        }
        Ok(())
    }

    /// Stream typed rows, one record batch at a time, file by file (for shard outputs that is
    /// shard by shard; [`DatasetReader::read_all`] restores the unsharded order).
    pub fn rows<T: Row>(&self) -> impl Iterator<Item = Result<Vec<T>>> + '_ {
        assert_eq!(T::DATASET, self.dataset, "row type does not match the reader's dataset");
        self.files.iter().flat_map(move |file| {
            let it: Box<dyn Iterator<Item = Result<Vec<T>>>> = match batches_of(self.dataset, file) {
                Ok(b) => Box::new(b.map(move |batch| decode(self.dataset, file, &batch?))),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
            it
        })
    }

    /// Read every row into memory (for stages whose state is per-dataset anyway). Shard outputs
    /// come back in the unsharded order: rows sorted (stably) by their prompt's position.
    pub fn read_all<T: Row>(&self) -> Result<Vec<T>> {
        let Some(set) = &self.shards else {
            let mut out = Vec::new();
            for chunk in self.rows::<T>() {
                out.extend(chunk?);
            }
            return Ok(out);
        };
        let mut keyed: Vec<(u64, T)> = Vec::with_capacity(self.rows as usize);
        for file in &self.files {
            for batch in batches_of(self.dataset, file)? {
                let batch = batch?;
                let ids = string_col(&batch, "prompt_id")?;
                for (i, row) in decode::<T>(self.dataset, file, &batch)?.into_iter().enumerate() {
                    let pos = set
                        .position(ids.value(i))
                        .ok_or_else(|| anyhow!("{}: prompt '{}' is not listed in the file's {META_SHARD} metadata", file.display(), ids.value(i)))?;
                    keyed.push((pos, row));
                }
            }
        }
        keyed.sort_by_key(|(pos, _)| *pos);
        Ok(keyed.into_iter().map(|(_, r)| r).collect())
    }
}

fn decode<T: Row>(dataset: Dataset, file: &Path, batch: &RecordBatch) -> Result<Vec<T>> {
    serde_arrow::from_record_batch::<Vec<T>>(batch).map_err(|e| anyhow!("{}: cannot decode {dataset} rows: {e}", file.display()))
}

/// Open, validate and read a whole dataset.
pub fn read_validated<T: Row>(paths: &[PathBuf]) -> Result<(DatasetReader, Vec<T>)> {
    let reader = DatasetReader::open(T::DATASET, paths)?;
    reader.validate()?;
    let rows = reader.read_all()?;
    Ok((reader, rows))
}

/// Check one file's footer, schema metadata and columns; returns its row count, its schema
/// version (the current one when the file has no `dno` metadata, e.g. one written by Polars) and
/// its `dno.shard` metadata, if any.
fn check_file_schema(dataset: Dataset, file: &Path) -> Result<(u64, u32, Option<String>)> {
    let f = File::open(file).with_context(|| format!("{}: cannot open", file.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| anyhow!("{}: not a valid Parquet file (truncated or corrupt?): {e}", file.display()))?;
    let kv: HashMap<String, String> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| kvs.iter().filter_map(|kv| kv.value.clone().map(|v| (kv.key.clone(), v))).collect())
        .unwrap_or_default();
    let mut version = dataset.version();
    if let Some(name) = kv.get(META_SCHEMA) {
        if name != dataset.name() {
            bail!("{}: this is a '{name}' file, but a '{}' file was expected", file.display(), dataset.name());
        }
        let v = kv.get(META_VERSION).map(String::as_str).unwrap_or("?");
        match v.parse::<u32>() {
            Ok(n) if (dataset.min_version()..=dataset.version()).contains(&n) => version = n,
            _ => {
                let readable = if dataset.min_version() == dataset.version() {
                    format!("version {}", dataset.version())
                } else {
                    format!("versions {} to {}", dataset.min_version(), dataset.version())
                };
                bail!("{}: {} schema version {v} is not supported (this dno reads {readable})", file.display(), dataset.name())
            }
        }
    }
    let schema = builder.schema();
    for c in dataset.columns() {
        match schema.field_with_name(c.name) {
            Ok(f) => {
                if !c.ty.accepts(f.data_type()) {
                    bail!(
                        "{}: column '{}' has type {}, but the {} schema needs {}",
                        file.display(),
                        c.name,
                        f.data_type(),
                        dataset.name(),
                        c.ty.name()
                    );
                }
            }
            Err(_) if c.may_be_absent(version) => {}
            Err(_) => bail!(
                "{}: missing column '{}' (required by the {} schema v{}; found: {})",
                file.display(),
                c.name,
                dataset.name(),
                version,
                schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    Ok((builder.metadata().file_metadata().num_rows() as u64, version, kv.get(META_SHARD).cloned()))
}

/// Record batches of one file, normalised to the dataset's canonical schema: known columns only,
/// in schema order, cast to canonical types, with absent optional columns filled with nulls.
fn batches_of(dataset: Dataset, file: &Path) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
    let f = File::open(file).with_context(|| format!("{}: cannot open", file.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.with_batch_size(READ_BATCH_ROWS).build())
        .map_err(|e| anyhow!("{}: not a valid Parquet file (truncated or corrupt?): {e}", file.display()))?;
    let target = canonical_schema(dataset);
    let file = file.to_path_buf();
    let mut row0 = 0u64;
    Ok(reader.map(move |b| {
        let b = b.map_err(|e| anyhow!("{}: cannot read data (corrupt, or an unsupported encoding?): {e}", file.display()))?;
        let out = normalise(dataset, &target, &file, &b, row0);
        row0 += b.num_rows() as u64;
        out
    }))
}

/// The canonical schema with every column nullable (nulls are checked explicitly, per row).
fn canonical_schema(dataset: Dataset) -> SchemaRef {
    Arc::new(Schema::new(dataset.columns().iter().map(|c| Field::new(c.name, c.ty.arrow(), true)).collect::<Vec<_>>()))
}

fn normalise(dataset: Dataset, target: &SchemaRef, file: &Path, b: &RecordBatch, row0: u64) -> Result<RecordBatch> {
    let n = b.num_rows();
    let cols: Vec<ArrayRef> = dataset
        .columns()
        .iter()
        .map(|c| match b.column_by_name(c.name) {
            Some(a) if a.data_type() == &c.ty.arrow() => Ok(a.clone()),
            Some(a) => {
                let out = arrow_cast::cast(a, &c.ty.arrow())
                    .map_err(|e| anyhow!("{}: column '{}': cannot convert {} to {}: {e}", file.display(), c.name, a.data_type(), c.ty.name()))?;
                // The default cast turns a value that does not fit (an int64 above i32::MAX) into
                // null; that is an error here, never a silent null.
                if let Some(i) = (0..n).find(|&i| a.is_valid(i) && out.is_null(i)) {
                    let v = arrow_cast::display::array_value_to_string(a, i).unwrap_or_default();
                    bail!("{}: row {}: column '{}': value {v} does not fit in {}", file.display(), row0 + i as u64, c.name, c.ty.name());
                }
                Ok(out)
            }
            None => Ok(arrow_array::new_null_array(&c.ty.arrow(), n)),
        })
        .collect::<Result<_>>()?;
    RecordBatch::try_new(target.clone(), cols).map_err(|e| anyhow!("{}: {e}", file.display()))
}

/// Every non-null `history` value must be a JSON array of user/assistant turns.
fn check_history(dataset: Dataset, file: &Path, b: &RecordBatch, row0: u64) -> Result<()> {
    if dataset.column("history").is_none() {
        return Ok(());
    }
    let h = string_col(b, "history")?;
    for i in 0..h.len() {
        if h.is_valid(i) {
            crate::rows::parse_history(h.value(i)).map_err(|e| anyhow!("{}: row {}: {e}", file.display(), row0 + i as u64))?;
        }
    }
    Ok(())
}

fn check_nulls(dataset: Dataset, version: u32, file: &Path, b: &RecordBatch, row0: u64) -> Result<()> {
    // A column newer than the file reads as null there: the reading stage handles that.
    for c in dataset.columns().iter().filter(|c| !c.nullable && !c.may_be_absent(version)) {
        let a = b.column_by_name(c.name).expect("normalised batch has every column");
        if a.null_count() > 0 {
            let i = (0..a.len()).find(|&i| a.is_null(i)).unwrap_or(0);
            bail!("{}: row {}: column '{}' is null, but the {} schema does not allow nulls there", file.display(), row0 + i as u64, c.name, dataset.name());
        }
    }
    Ok(())
}

fn check_unit_interval(dataset: Dataset, file: &Path, b: &RecordBatch, row0: u64) -> Result<()> {
    for name in dataset.unit_interval() {
        let a = b.column_by_name(name).expect("normalised batch has every column");
        let a = a.as_any().downcast_ref::<Float64Array>().expect("float64 after normalisation");
        for i in 0..a.len() {
            if a.is_valid(i) {
                let v = a.value(i);
                if !(0.0..=1.0).contains(&v) {
                    bail!("{}: row {}: column '{name}' = {v} is outside [0, 1]", file.display(), row0 + i as u64);
                }
            }
        }
    }
    Ok(())
}

fn string_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    b.column_by_name(name)
        .and_then(|a| a.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| anyhow!("column '{name}' is not a string column"))
}

/// An atomic, typed Parquet writer: rows go to `.<name>.<pid>.tmp` beside the destination and
/// the file is renamed into place by [`DatasetWriter::finish`]. Dropping an unfinished writer
/// removes the temporary file, so a failed stage never leaves a partial output behind.
pub struct DatasetWriter<T: Row> {
    final_path: PathBuf,
    tmp_path: PathBuf,
    writer: Option<ArrowWriter<File>>,
    fields: Vec<FieldRef>,
    buffer: Vec<T>,
    rows: u64,
}

/// Refuse to start a stage whose output exists, unless `force` is set.
pub fn check_output(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!("{}: output already exists (pass --force to overwrite it)", path.display());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create directory", dir.display()))?;
    }
    Ok(())
}

/// Removes temp files of `path` (`.NAME.PID.tmp`) left by a killed writer whose process is gone.
fn remove_stale_tmp(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let f = e.file_name();
        let Some(pid) = f.to_str().and_then(|f| f.strip_prefix(&prefix)).and_then(|r| r.strip_suffix(".tmp")) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

pub(crate) fn tmp_path_for(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

impl<T: Row> DatasetWriter<T> {
    pub fn create(path: &Path, provenance: &Provenance, force: bool) -> Result<Self> {
        check_output(path, force)?;
        remove_stale_tmp(path);
        let dataset = T::DATASET;
        let tmp_path = tmp_path_for(path);
        let file = File::create(&tmp_path).with_context(|| format!("{}: cannot create", tmp_path.display()))?;
        let schema = Arc::new(dataset.arrow_schema());
        let kv = vec![
            KeyValue::new(META_SCHEMA.to_string(), dataset.name().to_string()),
            KeyValue::new(META_VERSION.to_string(), dataset.version().to_string()),
            KeyValue::new(META_PROVENANCE.to_string(), provenance.to_json()),
        ];
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid zstd level")))
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .set_key_value_metadata(Some(kv))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| anyhow!("{}: cannot start Parquet writer: {e}", tmp_path.display()))?;
        Ok(DatasetWriter {
            final_path: path.to_path_buf(),
            tmp_path,
            writer: Some(writer),
            fields: schema.fields().iter().cloned().collect(),
            buffer: Vec::new(),
            rows: 0,
        })
    }

    pub fn write(&mut self, row: T) -> Result<()> {
        self.buffer.push(row);
        if self.buffer.len() >= READ_BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    pub fn write_all(&mut self, rows: impl IntoIterator<Item = T>) -> Result<()> {
        for r in rows {
            self.write(r)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let batch = serde_arrow::to_record_batch(&self.fields, &self.buffer)
            .map_err(|e| anyhow!("{}: cannot encode {} rows: {e}", self.final_path.display(), T::DATASET))?;
        validate_written(&batch, &self.final_path, self.rows)?;
        self.writer.as_mut().expect("writer open").write(&batch).map_err(|e| anyhow!("{}: write failed: {e}", self.tmp_path.display()))?;
        self.rows += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Add a metadata entry (e.g. a stage summary) before finishing.
    pub fn set_metadata(&mut self, key: &str, value: String) {
        self.writer.as_mut().expect("writer open").append_key_value_metadata(KeyValue::new(key.to_string(), value));
    }

    pub fn rows_written(&self) -> u64 {
        self.rows + self.buffer.len() as u64
    }

    /// Close the file, fsync it and rename it into place. Returns the number of rows.
    pub fn finish(mut self) -> Result<u64> {
        self.flush()?;
        let writer = self.writer.take().expect("writer open");
        let file = writer.into_inner().map_err(|e| anyhow!("{}: cannot finish Parquet file: {e}", self.tmp_path.display()))?;
        file.sync_all().with_context(|| format!("{}: fsync failed", self.tmp_path.display()))?;
        drop(file);
        std::fs::rename(&self.tmp_path, &self.final_path)
            .with_context(|| format!("cannot rename {} to {}", self.tmp_path.display(), self.final_path.display()))?;
        Ok(self.rows)
    }
}

impl<T: Row> Drop for DatasetWriter<T> {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// Guard against writing what we would refuse to read: nulls in non-null columns.
fn validate_written(batch: &RecordBatch, path: &Path, row0: u64) -> Result<()> {
    for (i, f) in batch.schema().fields().iter().enumerate() {
        if !f.is_nullable() && batch.column(i).null_count() > 0 {
            bail!("{}: internal error: null in non-null column '{}' near row {row0}", path.display(), f.name());
        }
    }
    Ok(())
}

/// Write bytes atomically (temp file in the same folder, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create directory", dir.display()))?;
    }
    let tmp = tmp_path_for(path);
    {
        use std::io::Write;
        let mut f = File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("{}: write failed", tmp.display()))?;
        f.sync_all().with_context(|| format!("{}: fsync failed", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

