//! TensorBoard event files, written by hand.
//!
//! An event file is a sequence of TFRecords, each holding one serialized `tensorflow.Event`
//! protobuf. Only scalars are written, so the few protobuf fields needed are encoded here
//! directly instead of pulling in a protobuf toolchain (prost + a build step) or the `tensorboard`
//! crates, for about 60 lines of code.
//!
//! Messages used (field numbers from tensorflow/core/util/event.proto and summary.proto):
//! ```text
//! Event      { double wall_time = 1; int64 step = 2; string file_version = 3;
//!              Summary summary = 5; SessionLog session_log = 7; }
//! Summary    { repeated Value value = 1; }
//! Value      { string tag = 1; float simple_value = 2; }
//! SessionLog { SessionStatus status = 1; }   // START = 1
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::MetricsError;

/// Appends scalar summaries to one TensorBoard event file.
pub struct TbWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl TbWriter {
    /// Starts a new event file in `dir` (created if missing).
    ///
    /// The file name is `events.out.tfevents.<unix_secs>.<host>`. TensorBoard reads the files of a
    /// directory in name order, so the timestamp is bumped past any existing file's: a resumed
    /// run's file then always sorts (and is read) after the files it continues, even when both
    /// were created within the same second.
    ///
    /// `restart_step`: when resuming, the first step the new file will hold. A `SessionLog.START`
    /// event at that step makes TensorBoard drop the points with step >= it from earlier files
    /// (steps logged after the checkpoint that the resumed run now redoes).
    pub fn create(dir: &Path, restart_step: Option<u64>) -> Result<Self, MetricsError> {
        fs::create_dir_all(dir).map_err(|e| MetricsError::io(dir, "creating directory", e))?;
        let secs = unix_secs().max(latest_event_file_secs(dir).map_or(0, |s| s + 1));
        let path = dir.join(format!("events.out.tfevents.{secs}.{}", host_name()));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| MetricsError::io(&path, "creating TensorBoard event file", e))?;
        let mut writer = Self {
            path,
            out: BufWriter::new(file),
        };
        let now = wall_time();
        writer.write_record(&encode_file_version_event(now))?;
        if let Some(step) = restart_step {
            writer.write_record(&encode_session_start_event(now, step))?;
        }
        writer.flush()?;
        Ok(writer)
    }

    /// The event file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event holding every `(tag, value)` at `step`. Values are stored as f32 (the
    /// `simple_value` type); non-finite values are kept, TensorBoard shows them as such.
    pub fn write_scalars<'a>(
        &mut self,
        step: u64,
        wall_time: f64,
        scalars: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<(), MetricsError> {
        let event = encode_scalars_event(wall_time, step, scalars);
        self.write_record(&event)
    }

    /// Pushes buffered records to the OS (TensorBoard sees them); `sync` also asks the OS to put
    /// them on disk.
    pub fn flush_to(&mut self, sync: bool) -> Result<(), MetricsError> {
        self.out
            .flush()
            .map_err(|e| MetricsError::io(&self.path, "flushing", e))?;
        if sync {
            self.out
                .get_ref()
                .sync_data()
                .map_err(|e| MetricsError::io(&self.path, "syncing", e))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), MetricsError> {
        self.flush_to(false)
    }

    fn write_record(&mut self, data: &[u8]) -> Result<(), MetricsError> {
        self.out
            .write_all(&frame_record(data))
            .map_err(|e| MetricsError::io(&self.path, "writing TensorBoard event", e))
    }
}

/// TFRecord framing: `u64 length (LE) | masked crc32c(length) | data | masked crc32c(data)`.
pub fn frame_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// The CRC that TFRecord stores: crc32c rotated and offset, so that a CRC of data that itself
/// contains CRCs stays well distributed (TensorFlow's `crc32c::Mask`).
pub fn masked_crc32c(data: &[u8]) -> u32 {
    // ((crc >> 15) | (crc << 17)) + 0xa282ead8, wrapping.
    crc32c::crc32c(data)
        .rotate_right(15)
        .wrapping_add(0xa282_ead8)
}

// --- protobuf encoding: just the wire types the event messages need ---

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_FIXED32: u32 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(out, u64::from((field << 3) | wire));
}

fn put_len_delimited(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The `wall_time` and `step` fields every event starts with.
fn event_header(wall_time: f64, step: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_key(&mut out, 1, WIRE_FIXED64);
    out.extend_from_slice(&wall_time.to_le_bytes());
    // int64 field: a step past i64::MAX cannot be represented, saturate rather than wrap.
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    if step != 0 {
        put_key(&mut out, 2, WIRE_VARINT);
        put_varint(&mut out, step as u64);
    }
    out
}

fn encode_file_version_event(wall_time: f64) -> Vec<u8> {
    let mut out = event_header(wall_time, 0);
    put_len_delimited(&mut out, 3, b"brain.Event:2");
    out
}

fn encode_session_start_event(wall_time: f64, step: u64) -> Vec<u8> {
    let mut out = event_header(wall_time, step);
    put_len_delimited(&mut out, 7, &[0x08, 0x01]); // SessionLog { status: START }
    out
}

fn encode_scalars_event<'a>(
    wall_time: f64,
    step: u64,
    scalars: impl IntoIterator<Item = (&'a str, f64)>,
) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, value) in scalars {
        let mut v = Vec::with_capacity(tag.len() + 8);
        put_len_delimited(&mut v, 1, tag.as_bytes());
        put_key(&mut v, 2, WIRE_FIXED32);
        v.extend_from_slice(&(value as f32).to_le_bytes());
        put_len_delimited(&mut summary, 1, &v);
    }
    let mut out = event_header(wall_time, step);
    put_len_delimited(&mut out, 5, &summary);
    out
}

// --- file naming ---

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds since the Unix epoch as f64 (0 if the clock is before 1970).
pub fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The largest `<unix_secs>` among the event files already in `dir`.
fn latest_event_file_secs(dir: &Path) -> Option<u64> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            let rest = name.to_str()?.strip_prefix("events.out.tfevents.")?;
            rest.split('.').next()?.parse::<u64>().ok()
        })
        .max()
}

/// The machine's name for the file name (TensorBoard's convention), or `kiln` when unknown.
fn host_name() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let name = raw.trim();
    let safe = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if safe {
        name.to_string()
    } else {
        "kiln".to_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A decoded protobuf field: varints, fixed-width values and length-delimited bytes.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Field {
        Varint(u64),
        Fixed64(u64),
        Fixed32(u32),
        Bytes(Vec<u8>),
    }

    fn get_varint(buf: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = buf[*pos];
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    /// Decodes one message into (field number, value) pairs, in order.
    pub fn decode_message(buf: &[u8]) -> Vec<(u32, Field)> {
        let mut pos = 0;
        let mut fields = Vec::new();
        while pos < buf.len() {
            let key = get_varint(buf, &mut pos);
            let (field, wire) = ((key >> 3) as u32, (key & 7) as u32);
            let value = match wire {
                WIRE_VARINT => Field::Varint(get_varint(buf, &mut pos)),
                WIRE_FIXED64 => {
                    let v = u64::from_le_bytes(buf[pos..pos + 8].try_into().unwrap());
                    pos += 8;
                    Field::Fixed64(v)
                }
                WIRE_FIXED32 => {
                    let v = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap());
                    pos += 4;
                    Field::Fixed32(v)
                }
                WIRE_LEN => {
                    let len = get_varint(buf, &mut pos) as usize;
                    let v = buf[pos..pos + len].to_vec();
                    pos += len;
                    Field::Bytes(v)
                }
                other => panic!("unexpected wire type {other}"),
            };
            fields.push((field, value));
        }
        fields
    }

    /// Splits an event file into its records, checking both CRCs of each.
    pub fn read_records(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut records = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let len_bytes = &bytes[pos..pos + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let len_crc = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
            assert_eq!(len_crc, masked_crc32c(len_bytes), "length crc");
            let data = &bytes[pos + 12..pos + 12 + len];
            let data_crc =
                u32::from_le_bytes(bytes[pos + 12 + len..pos + 16 + len].try_into().unwrap());
            assert_eq!(data_crc, masked_crc32c(data), "data crc");
            records.push(data.to_vec());
            pos += 16 + len;
        }
        records
    }

    /// A decoded event: wall time, step, and its scalars (tag, value).
    #[derive(Debug)]
    pub struct DecodedEvent {
        pub wall_time: f64,
        pub step: u64,
        pub file_version: Option<String>,
        pub session_start: bool,
        pub scalars: Vec<(String, f32)>,
    }

    pub fn decode_event(data: &[u8]) -> DecodedEvent {
        let mut ev = DecodedEvent {
            wall_time: 0.0,
            step: 0,
            file_version: None,
            session_start: false,
            scalars: Vec::new(),
        };
        for (field, value) in decode_message(data) {
            match (field, value) {
                (1, Field::Fixed64(bits)) => ev.wall_time = f64::from_bits(bits),
                (2, Field::Varint(step)) => ev.step = step,
                (3, Field::Bytes(b)) => ev.file_version = Some(String::from_utf8(b).unwrap()),
                (5, Field::Bytes(summary)) => {
                    for (f, value) in decode_message(&summary) {
                        let (1, Field::Bytes(value)) = (f, value) else {
                            panic!("summary field {f}")
                        };
                        let mut tag = String::new();
                        let mut simple = f32::NAN;
                        for (vf, v) in decode_message(&value) {
                            match (vf, v) {
                                (1, Field::Bytes(t)) => tag = String::from_utf8(t).unwrap(),
                                (2, Field::Fixed32(bits)) => simple = f32::from_bits(bits),
                                other => panic!("unexpected value field {other:?}"),
                            }
                        }
                        ev.scalars.push((tag, simple));
                    }
                }
                (7, Field::Bytes(log)) => {
                    ev.session_start = decode_message(&log) == vec![(1, Field::Varint(1))];
                }
                other => panic!("unexpected event field {other:?}"),
            }
        }
        ev
    }

    /// Every event of an event file, CRCs checked.
    pub fn read_events(path: &Path) -> Vec<DecodedEvent> {
        let bytes = fs::read(path).unwrap();
        read_records(&bytes)
            .iter()
            .map(|r| decode_event(r))
            .collect()
    }

    #[test]
    fn crc32c_known_vector() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        // ((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xa282ead8, computed independently (Python).
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn varint_encoding() {
        let enc = |v: u64| {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            out
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
        let mut pos = 0;
        assert_eq!(get_varint(&enc(u64::MAX), &mut pos), u64::MAX);
    }

    #[test]
    fn record_framing_layout() {
        let framed = frame_record(b"hello");
        assert_eq!(framed.len(), 8 + 4 + 5 + 4);
        assert_eq!(&framed[..8], &5u64.to_le_bytes());
        assert_eq!(&framed[12..17], b"hello");
        assert_eq!(read_records(&framed), vec![b"hello".to_vec()]);
    }

    #[test]
    fn scalars_round_trip_through_event_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TbWriter::create(dir.path(), None).unwrap();
        w.write_scalars(1, 100.5, [("reward/mean", 0.25), ("actor/kl", 1e-3)])
            .unwrap();
        w.write_scalars(2, 101.5, [("reward/mean", f64::NAN)])
            .unwrap();
        w.write_scalars(u64::MAX, 102.0, [("big", 1e300)]).unwrap();
        w.flush_to(true).unwrap();
        let name = w.path().file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");

        let events = read_events(w.path());
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        assert!(events[0].wall_time > 1.0e9);
        assert_eq!(events[1].step, 1);
        assert_eq!(events[1].wall_time, 100.5);
        assert_eq!(
            events[1].scalars,
            vec![
                ("reward/mean".to_string(), 0.25),
                ("actor/kl".to_string(), 1e-3)
            ]
        );
        assert_eq!(events[2].step, 2);
        assert!(events[2].scalars[0].1.is_nan());
        assert_eq!(events[3].step, i64::MAX as u64);
        assert_eq!(events[3].scalars[0].1, f32::INFINITY);
    }

    #[test]
    fn resumed_file_sorts_after_and_starts_a_session() {
        let dir = tempfile::tempdir().unwrap();
        let first = TbWriter::create(dir.path(), None).unwrap();
        let second = TbWriter::create(dir.path(), Some(7)).unwrap();
        assert!(second.path() > first.path(), "new file must sort last");
        let events = read_events(second.path());
        assert_eq!(events.len(), 2);
        assert!(events[1].session_start);
        assert_eq!(events[1].step, 7);
    }
}
