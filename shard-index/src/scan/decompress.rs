//! Streaming decompression in front of a [`ShardScanner`].
//!
//! Compressed tar and JSONL shards are decompressed chunk by chunk as they arrive, so a 10 GB
//! `.tar.zst` needs one output buffer, not 10 GB. A stream that ends inside a zstd frame is
//! reported as truncated: zstd itself would quietly return the bytes decoded so far.

use super::{ScanOutput, ShardScanner};
use crate::error::{Error, Result};
use crate::format::Compression;
use std::io::Write;
use zstd::stream::raw::{Decoder as ZstdDecoder, InBuffer, Operation, OutBuffer};

const OUT_CHUNK: usize = 256 << 10;

/// Compressed bytes in, decompressed bytes to the scanner.
pub struct Pipeline {
    path: String,
    stage: Stage,
}

enum Stage {
    Plain(Box<dyn ShardScanner>),
    Zstd {
        decoder: Box<ZstdDecoder<'static>>,
        out: Vec<u8>,
        /// zstd's hint after the last call: 0 when the input ended on a frame boundary.
        in_frame: bool,
        scanner: Box<dyn ShardScanner>,
    },
    Gzip(Box<flate2::write::MultiGzDecoder<ScannerWriter>>),
}

impl Pipeline {
    pub fn new(path: &str, compression: Compression, scanner: Box<dyn ShardScanner>) -> Self {
        let stage = match compression {
            Compression::None => Stage::Plain(scanner),
            Compression::Zstd => Stage::Zstd {
                decoder: Box::new(ZstdDecoder::new().expect("zstd context allocation")),
                out: vec![0; OUT_CHUNK],
                in_frame: false,
                scanner,
            },
            Compression::Gzip => Stage::Gzip(Box::new(flate2::write::MultiGzDecoder::new(
                ScannerWriter {
                    scanner,
                    error: None,
                },
            ))),
        };
        Self {
            path: path.into(),
            stage,
        }
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.stage {
            Stage::Plain(s) => s.feed(data),
            Stage::Zstd {
                decoder,
                out,
                in_frame,
                scanner,
            } => {
                let mut input = InBuffer::around(data);
                while input.pos < data.len() {
                    let mut output = OutBuffer::around(&mut out[..]);
                    let hint =
                        decoder
                            .run(&mut input, &mut output)
                            .map_err(|e| Error::Decompress {
                                path: self.path.clone(),
                                reason: format!("zstd: {e}"),
                            })?;
                    *in_frame = hint != 0;
                    let n = output.pos();
                    scanner.feed(&out[..n])?;
                }
                // Drain output the decoder still holds for input it has already consumed.
                loop {
                    let mut input = InBuffer::around(&[]);
                    let mut output = OutBuffer::around(&mut out[..]);
                    decoder
                        .run(&mut input, &mut output)
                        .map_err(|e| Error::Decompress {
                            path: self.path.clone(),
                            reason: format!("zstd: {e}"),
                        })?;
                    let n = output.pos();
                    if n == 0 {
                        break;
                    }
                    scanner.feed(&out[..n])?;
                }
                Ok(())
            }
            Stage::Gzip(w) => match w.write_all(data) {
                Ok(()) => Ok(()),
                Err(e) => Err(w.get_mut().error.take().unwrap_or(Error::Decompress {
                    path: self.path.clone(),
                    reason: format!("gzip: {e}"),
                })),
            },
        }
    }

    pub fn finish(self) -> Result<ScanOutput> {
        match self.stage {
            Stage::Plain(s) => s.finish(),
            Stage::Zstd {
                in_frame, scanner, ..
            } => {
                if in_frame {
                    return Err(Error::Decompress {
                        path: self.path,
                        reason: "zstd stream is truncated (ends inside a frame)".into(),
                    });
                }
                scanner.finish()
            }
            Stage::Gzip(mut w) => {
                if let Err(e) = w.try_finish() {
                    return Err(w.get_mut().error.take().unwrap_or(Error::Decompress {
                        path: self.path,
                        reason: format!("gzip: {e}"),
                    }));
                }
                let writer = w.finish().map_err(|e| Error::Decompress {
                    path: self.path.clone(),
                    reason: format!("gzip: {e}"),
                })?;
                writer.scanner.finish()
            }
        }
    }
}

/// Adapts a scanner to `io::Write` for flate2, keeping the scanner's typed error.
struct ScannerWriter {
    scanner: Box<dyn ShardScanner>,
    error: Option<Error>,
}

impl Write for ScannerWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.scanner.feed(buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                let msg = e.to_string();
                self.error = Some(e);
                Err(std::io::Error::other(msg))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::jsonl::JsonlScanner;

    fn lines(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!("{{\"id\": {i}}}\n"))
            .collect::<String>()
            .into_bytes()
    }

    fn run(compression: Compression, bytes: &[u8], chunk: usize) -> Result<ScanOutput> {
        let mut p = Pipeline::new("x", compression, Box::new(JsonlScanner::new("x")));
        for c in bytes.chunks(chunk) {
            p.feed(c)?;
        }
        p.finish()
    }

    #[test]
    fn zstd_streams_and_detects_truncation() {
        let plain = lines(20_000);
        let z = zstd::encode_all(&plain[..], 3).unwrap();
        for chunk in [1 << 20, 1000, 7] {
            assert_eq!(
                run(Compression::Zstd, &z, chunk).unwrap().num_samples,
                20_000
            );
        }
        let err = run(Compression::Zstd, &z[..z.len() / 2], 1000).unwrap_err();
        assert!(
            matches!(err, Error::Decompress { .. } | Error::MalformedJson { .. }),
            "{err}"
        );
        let err = run(Compression::Zstd, b"definitely not zstd", 1000).unwrap_err();
        assert!(matches!(err, Error::Decompress { .. }), "{err}");
    }

    #[test]
    fn gzip_streams_and_keeps_scanner_errors() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&lines(5000)).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(run(Compression::Gzip, &gz, 333).unwrap().num_samples, 5000);

        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"{\"a\": 1}\nnot json\n").unwrap();
        let gz = enc.finish().unwrap();
        let err = run(Compression::Gzip, &gz, 5).unwrap_err();
        assert!(matches!(err, Error::MalformedJson { line: 2, .. }), "{err}");
    }
}
