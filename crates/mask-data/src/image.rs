//! Grey images: an IDX reader (LeCun's MNIST format, gzip or raw, decompression bounded), the
//! embedded Fashion-MNIST subset, and 8-bit greyscale PNG output through the `png` crate.
//!
//! Data: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence, Zalando SE). The first 10,000
//! training and first 2,000 test images are embedded (see `data/README.md`); full IDX files are
//! read by path with [`ImageSet::from_files`].

use std::path::Path;

use crate::compress::maybe_gunzip;
use crate::error::{io_error, DataError, Result};

static TRAIN_IMAGES_GZ: &[u8] =
    include_bytes!("../data/fashion-mnist/train10k-images-idx3-ubyte.gz");
static TRAIN_LABELS_GZ: &[u8] =
    include_bytes!("../data/fashion-mnist/train10k-labels-idx1-ubyte.gz");
static TEST_IMAGES_GZ: &[u8] = include_bytes!("../data/fashion-mnist/test2k-images-idx3-ubyte.gz");
static TEST_LABELS_GZ: &[u8] = include_bytes!("../data/fashion-mnist/test2k-labels-idx1-ubyte.gz");

/// Largest decompressed IDX file accepted: 1 GiB (the full MNIST-style training sets are
/// 47 MB; a gzip bomb expands ~1000x).
pub const IDX_LIMIT: u64 = 1 << 30;

/// Fashion-MNIST's class names, by label.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Grey images, `count` of `rows x cols` `u8` pixels, row-major, image after image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count * rows * cols` pixels.
    pub pixels: Vec<u8>,
}

impl Images {
    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Images with class labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// The images.
    pub images: Images,
    /// One label per image.
    pub labels: Vec<u8>,
}

impl ImageSet {
    /// Pairs images and labels, refusing different counts.
    pub fn new(images: Images, labels: Vec<u8>) -> Result<Self> {
        if images.count != labels.len() {
            return Err(DataError::CountMismatch {
                what: "images vs labels".into(),
                left: images.count,
                right: labels.len(),
            });
        }
        Ok(Self { images, labels })
    }

    /// Reads an images file and a labels file (IDX, gzip or raw).
    pub fn from_files(images: &Path, labels: &Path) -> Result<Self> {
        Self::new(read_idx_images(images)?, read_idx_labels(labels)?)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first `n` images (all of them if fewer).
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.len());
        let px = self.images.rows * self.images.cols;
        Self {
            images: Images {
                count: n,
                rows: self.images.rows,
                cols: self.images.cols,
                pixels: self.images.pixels[..n * px].to_vec(),
            },
            labels: self.labels[..n].to_vec(),
        }
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn header(bytes: &[u8], len: usize, what: &str) -> Result<Vec<u32>> {
    if bytes.len() < len {
        return Err(DataError::Truncated {
            what: format!("{what} (header)"),
            expected: len as u64,
            got: bytes.len() as u64,
        });
    }
    Ok((0..len / 4).map(|i| be_u32(bytes, 4 * i)).collect())
}

/// Parses an IDX images buffer (magic `0x00000803`; gzip-compressed or raw).
pub fn parse_idx_images(bytes: Vec<u8>, what: &str) -> Result<Images> {
    let bytes = maybe_gunzip(bytes, what, IDX_LIMIT)?;
    let h = header(&bytes, 16, what)?;
    if h[0] != 0x0803 {
        return Err(DataError::BadMagic {
            what: what.to_string(),
            got: h[0],
            expected: 0x0803,
            kind: "IDX u8 images, 3 dimensions",
        });
    }
    let (count, rows, cols) = (h[1], h[2], h[3]);
    if !(1..=4096).contains(&rows) || !(1..=4096).contains(&cols) {
        return Err(DataError::BadDims {
            what: what.to_string(),
            rows,
            cols,
        });
    }
    let expected = count as u64 * rows as u64 * cols as u64;
    let got = (bytes.len() - 16) as u64;
    if got != expected {
        return Err(DataError::Truncated {
            what: what.to_string(),
            expected,
            got,
        });
    }
    Ok(Images {
        count: count as usize,
        rows: rows as usize,
        cols: cols as usize,
        pixels: bytes[16..].to_vec(),
    })
}

/// Parses an IDX labels buffer (magic `0x00000801`; gzip-compressed or raw).
pub fn parse_idx_labels(bytes: Vec<u8>, what: &str) -> Result<Vec<u8>> {
    let bytes = maybe_gunzip(bytes, what, IDX_LIMIT)?;
    let h = header(&bytes, 8, what)?;
    if h[0] != 0x0801 {
        return Err(DataError::BadMagic {
            what: what.to_string(),
            got: h[0],
            expected: 0x0801,
            kind: "IDX u8 labels, 1 dimension",
        });
    }
    let got = (bytes.len() - 8) as u64;
    if got != h[1] as u64 {
        return Err(DataError::Truncated {
            what: what.to_string(),
            expected: h[1] as u64,
            got,
        });
    }
    Ok(bytes[8..].to_vec())
}

/// Reads an IDX images file (`*-images-idx3-ubyte`, optionally `.gz`).
pub fn read_idx_images(path: &Path) -> Result<Images> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    parse_idx_images(bytes, &path.display().to_string())
}

/// Reads an IDX labels file (`*-labels-idx1-ubyte`, optionally `.gz`).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    parse_idx_labels(bytes, &path.display().to_string())
}

/// The embedded Fashion-MNIST subset: the first 10,000 training and first 2,000 test images.
pub fn fashion_mnist_subset() -> Result<(ImageSet, ImageSet)> {
    let train = ImageSet::new(
        parse_idx_images(TRAIN_IMAGES_GZ.to_vec(), "embedded train10k images")?,
        parse_idx_labels(TRAIN_LABELS_GZ.to_vec(), "embedded train10k labels")?,
    )?;
    let test = ImageSet::new(
        parse_idx_images(TEST_IMAGES_GZ.to_vec(), "embedded test2k images")?,
        parse_idx_labels(TEST_LABELS_GZ.to_vec(), "embedded test2k labels")?,
    )?;
    Ok((train, test))
}

/// A grey picture, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreyImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height` pixels.
    pub pixels: Vec<u8>,
}

impl GreyImage {
    /// The image as an 8-bit greyscale PNG.
    pub fn png_bytes(&self) -> Result<Vec<u8>> {
        let err = |e: png::EncodingError| DataError::Decode {
            what: "PNG encoding".into(),
            source: std::io::Error::other(e.to_string()),
        };
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(err)?;
        writer.write_image_data(&self.pixels).map_err(err)?;
        writer.finish().map_err(err)?;
        Ok(out)
    }

    /// Writes the image as an 8-bit greyscale PNG, atomically.
    pub fn write_png(&self, path: &Path) -> Result<()> {
        mask_core::io::write_atomic(path, &self.png_bytes()?).map_err(io_error(path))
    }

    /// Decodes an 8-bit greyscale PNG.
    pub fn from_png(bytes: &[u8], what: &str) -> Result<Self> {
        let err = |e: png::DecodingError| DataError::Decode {
            what: what.to_string(),
            source: std::io::Error::other(e.to_string()),
        };
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .map_err(err)?;
        let size = reader
            .output_buffer_size()
            .ok_or_else(|| DataError::TooLarge {
                what: what.to_string(),
                limit: usize::MAX as u64,
            })?;
        let mut buf = vec![0; size];
        let info = reader.next_frame(&mut buf).map_err(err)?;
        if info.color_type != png::ColorType::Grayscale || info.bit_depth != png::BitDepth::Eight {
            return Err(DataError::Decode {
                what: what.to_string(),
                source: std::io::Error::other(format!(
                    "{:?} {:?}, expected 8-bit greyscale",
                    info.color_type, info.bit_depth
                )),
            });
        }
        buf.truncate(info.buffer_size());
        Ok(Self {
            width: info.width as usize,
            height: info.height as usize,
            pixels: buf,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::gunzip_bounded;
    use sha2::{Digest, Sha256};

    fn hex(bytes: &[u8]) -> String {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn fashion_mnist_subset_is_intact() {
        let raw = |gz: &[u8]| gunzip_bounded(gz, "t", IDX_LIMIT).unwrap();
        assert_eq!(
            hex(&raw(TRAIN_IMAGES_GZ)),
            "ed2e37ed5a3a57d212141a69fe0a0de5a7126ffba14ac3f7e76f5f52cc04b1f0"
        );
        assert_eq!(
            hex(&raw(TRAIN_LABELS_GZ)),
            "a69f2dad024ca220a8c4d85f621fdf929042d40c444abde2868903e9220ad517"
        );
        assert_eq!(
            hex(&raw(TEST_IMAGES_GZ)),
            "862035b0a96959b614c9574f4c2b0ae9584ca234813e8d6d7adb7838b12ca46b"
        );
        assert_eq!(
            hex(&raw(TEST_LABELS_GZ)),
            "aa3f574d30afaf0d4d9da084a6f8541771e20693d6a97fae6e9a4953fca8f078"
        );
        let (train, test) = fashion_mnist_subset().unwrap();
        assert_eq!((train.len(), test.len()), (10_000, 2_000));
        assert_eq!((train.images.rows, train.images.cols), (28, 28));
        let mut per_class = [0usize; 10];
        for &l in &train.labels {
            per_class[l as usize] += 1;
        }
        assert_eq!(
            per_class,
            [942, 1027, 1016, 1019, 974, 989, 1021, 1022, 990, 1000]
        );
    }

    #[test]
    fn png_round_trips_through_the_png_crate() {
        let img = GreyImage {
            width: 5,
            height: 3,
            pixels: (0..15).map(|i| (i * 17) as u8).collect(),
        };
        let bytes = img.png_bytes().unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(GreyImage::from_png(&bytes, "t").unwrap(), img);
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 20] ^= 1; // inside IDAT: CRC mismatch
        assert!(GreyImage::from_png(&bad, "bad.png").is_err());
        assert!(GreyImage::from_png(b"GIF89a..", "gif").is_err());
    }
}
