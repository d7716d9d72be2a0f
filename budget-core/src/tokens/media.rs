//! Prompt tokens of images, audio and files: the parts of a message that are not text.
//!
//! Providers bill these parts as prompt tokens, so a reservation that leaves them out is too
//! small and the call overshoots its limit. Every count here is an estimate
//! (`estimated: true`): OpenAI documents its image formulas but bills a few framing tokens more
//! per image, and nothing about audio or files is documented to the token. Each bound errs
//! high, on purpose, and says where its figures come from.
//!
//! # Images
//!
//! OpenAI's documented formulas (vision guide, "Calculating costs"):
//!
//! - **Tiles** (gpt-4o, gpt-4.1, gpt-4.5, gpt-4-turbo: 85 + 170 per tile; gpt-4o-mini:
//!   2,833 + 5,667; o1, o3: 75 + 150; gpt-5: 70 + 140). `detail: low` costs the base only.
//!   `high` / `auto`: scale to fit in 2048 × 2048, then scale down so the shortest side is at
//!   most 768, then count 512-px tiles. Scaled sides are rounded **up** (OpenAI does not say
//!   how it rounds; up never undercounts). With no known size (a URL), the worst case is
//!   [`MAX_TILES`] tiles (an image of 768 × 2048 after scaling).
//! - **Patches** (gpt-4.1-mini × 1.62, gpt-4.1-nano × 2.46, o4-mini × 1.72, gpt-5-mini × 1.62,
//!   gpt-5-nano × 2.46): 32-px patches, at most [`MAX_PATCHES`], times the model's multiplier,
//!   whatever the detail. Without a size: [`MAX_PATCHES`] patches.
//! - **Other OpenAI models** (newer families whose constants are not published): the larger of
//!   the 85 + 170 tile count and the patch count at the highest multiplier (2.46); without a
//!   size, 3,779 tokens.
//! - **`detail: original`**: not documented; counted like the other OpenAI models' bound.
//!
//! Models that are not OpenAI's: the larger of Claude's newer image tier (`⌈w/28⌉ × ⌈h/28⌉`
//! patches, at most [`CLAUDE_MAX_IMAGE_TOKENS`], which Anthropic reaches by resizing) and
//! Gemini's tiling (258 tokens for an image of at most 384 px a side, else 258 per 768-px
//! tile). Without a size: [`CLAUDE_MAX_IMAGE_TOKENS`], which Gemini's tiling passes only for
//! images above about 3,000 px a side — the one case here that is not a bound.
//!
//! # Audio
//!
//! At most [`AUDIO_TOKENS_PER_SECOND`] tokens a second (Gemini documents 32 a second; OpenAI's
//! audio models use fewer). The duration comes from a WAV header when there is one, else it is
//! bounded by the lowest bit rate the format has: 8 kbit/s for MP3 (MPEG-2.5 layer III),
//! 4 kB/s for WAV (4-bit ADPCM at 8 kHz), 6 kbit/s for anything else (Opus's floor).
//!
//! # Files (PDF)
//!
//! OpenAI reads a PDF as the text **and** an image of each page. A page costs at most the
//! model's worst-case image plus [`PDF_PAGE_TEXT_TOKENS`] of text. Pages are counted in the
//! file's data when it is at hand (`/Type /Page` objects, else the page tree's `/Count`); a
//! file sent by id, or one whose pages are hidden in compressed object streams, is assumed to
//! have [`MAX_PDF_PAGES`] pages, OpenAI's documented limit per request.

use crate::tokens::{TokenCount, model_info, strip_model_prefixes};

/// The most 512-px tiles an image can have after OpenAI's scaling (2 × 4).
pub const MAX_TILES: u64 = 8;

/// The most 32-px patches OpenAI's patch-based models take from one image.
pub const MAX_PATCHES: u64 = 1536;

/// The most tokens Claude's newer image tier takes from one image (2,576 px on the long edge;
/// earlier models stop near 1,600).
pub const CLAUDE_MAX_IMAGE_TOKENS: u64 = 4784;

/// The most tokens one second of input audio is assumed to cost.
pub const AUDIO_TOKENS_PER_SECOND: u64 = 32;

/// The text tokens assumed per PDF page (a dense two-column page of 10-point text holds about
/// 1,500 words, some 2,000 tokens).
pub const PDF_PAGE_TEXT_TOKENS: u64 = 3000;

/// The pages assumed for a PDF whose pages cannot be counted: OpenAI's limit per request.
pub const MAX_PDF_PAGES: u64 = 100;

/// How closely a model looks at an image (OpenAI's `detail`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ImageDetail {
    /// A fixed, low-resolution look.
    Low,
    /// Full tiling.
    High,
    /// The provider chooses; counted as [`ImageDetail::High`]. The default.
    #[default]
    Auto,
    /// The image at its own resolution (undocumented: counted by the widest bound).
    Original,
}

/// The encoding of an audio part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioFormat {
    /// RIFF WAVE (its header gives the exact duration).
    Wav,
    /// MPEG audio layer III.
    Mp3,
    /// Anything else (Opus, FLAC, AAC, ...).
    Other,
}

/// A part of a prompt that is not text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaPart {
    /// An image.
    Image {
        /// The `detail` the request asks for.
        detail: ImageDetail,
        /// Width and height in pixels, when known (a data URL's header says; a URL does not).
        size: Option<(u32, u32)>,
    },
    /// Audio.
    Audio {
        /// Its encoding.
        format: AudioFormat,
        /// Its size in bytes, decoded (not base64).
        bytes: u64,
        /// Its duration in whole seconds rounded up, when known (a WAV header says).
        seconds: Option<u64>,
    },
    /// A file (a PDF: text and an image of each page).
    File {
        /// Its number of pages, when known.
        pages: Option<u64>,
    },
}

/// How a model counts image tokens.
#[derive(Debug, Clone, Copy)]
enum ImageProfile {
    Tiles { base: u64, per_tile: u64 },
    Patches { percent: u64 },
    OtherOpenAi,
    NotOpenAi,
}

/// Tile models and patch models, most specific family first.
const IMAGE_PROFILES: &[(&str, ImageProfile)] = &[
    (
        "gpt-4o-mini",
        ImageProfile::Tiles {
            base: 2833,
            per_tile: 5667,
        },
    ),
    ("gpt-4.1-mini", ImageProfile::Patches { percent: 162 }),
    ("gpt-4.1-nano", ImageProfile::Patches { percent: 246 }),
    ("o4-mini", ImageProfile::Patches { percent: 172 }),
    ("gpt-5-mini", ImageProfile::Patches { percent: 162 }),
    ("gpt-5-nano", ImageProfile::Patches { percent: 246 }),
    ("gpt-4o", GPT_4O_TILES),
    ("chatgpt-4o", GPT_4O_TILES),
    ("gpt-4.1", GPT_4O_TILES),
    ("gpt-4.5", GPT_4O_TILES),
    ("gpt-4-turbo", GPT_4O_TILES),
    (
        "o1",
        ImageProfile::Tiles {
            base: 75,
            per_tile: 150,
        },
    ),
    (
        "o3",
        ImageProfile::Tiles {
            base: 75,
            per_tile: 150,
        },
    ),
];

const GPT_4O_TILES: ImageProfile = ImageProfile::Tiles {
    base: 85,
    per_tile: 170,
};

/// The highest patch multiplier OpenAI documents (gpt-4.1-nano, gpt-5-nano), in percent.
const MAX_PATCH_PERCENT: u64 = 246;

fn image_profile(model: &str) -> ImageProfile {
    if model_info(model).is_none() {
        return ImageProfile::NotOpenAi;
    }
    let name = strip_model_prefixes(model).to_ascii_lowercase();
    let in_family = |family: &str| {
        name.strip_prefix(family)
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_alphanumeric()))
    };
    if let Some(&(_, profile)) = IMAGE_PROFILES.iter().find(|(f, _)| in_family(f)) {
        return profile;
    }
    // gpt-5 itself and its dated or `-chat` ids, not gpt-5.1 and later.
    if name == "gpt-5" || name.starts_with("gpt-5-") {
        return ImageProfile::Tiles {
            base: 70,
            per_tile: 140,
        };
    }
    ImageProfile::OtherOpenAi
}

/// `⌈a × num / den⌉`, computed in `u64` without overflow for image sides.
fn scale_up(a: u64, num: u64, den: u64) -> u64 {
    (a * num).div_ceil(den.max(1))
}

/// OpenAI's 512-px tiles after scaling (see the module docs); sides rounded up.
fn openai_tiles(width: u32, height: u32) -> u64 {
    let (mut w, mut h) = (u64::from(width.max(1)), u64::from(height.max(1)));
    let long = w.max(h);
    if long > 2048 {
        (w, h) = (scale_up(w, 2048, long), scale_up(h, 2048, long));
    }
    let short = w.min(h);
    if short > 768 {
        (w, h) = (scale_up(w, 768, short), scale_up(h, 768, short));
    }
    w.div_ceil(512) * h.div_ceil(512)
}

/// 32-px patches, capped at [`MAX_PATCHES`] (OpenAI scales larger images down to fit).
fn openai_patches(width: u32, height: u32) -> u64 {
    let (w, h) = (u64::from(width.max(1)), u64::from(height.max(1)));
    (w.div_ceil(32) * h.div_ceil(32)).min(MAX_PATCHES)
}

fn patch_tokens(patches: u64, percent: u64) -> u64 {
    (patches * percent).div_ceil(100)
}

fn tile_tokens(base: u64, per_tile: u64, detail: ImageDetail, size: Option<(u32, u32)>) -> u64 {
    match detail {
        ImageDetail::Low => base,
        _ => base + per_tile * size.map_or(MAX_TILES, |(w, h)| openai_tiles(w, h)),
    }
}

/// The prompt tokens of one image on `model` (see the module docs).
fn image_tokens(model: &str, detail: ImageDetail, size: Option<(u32, u32)>) -> u64 {
    let other_openai = |size: Option<(u32, u32)>| {
        let tiles = tile_tokens(85, 170, ImageDetail::High, size);
        let patches = size.map_or(MAX_PATCHES, |(w, h)| openai_patches(w, h));
        tiles.max(patch_tokens(patches, MAX_PATCH_PERCENT))
    };
    match image_profile(model) {
        ImageProfile::NotOpenAi => match size {
            None => CLAUDE_MAX_IMAGE_TOKENS,
            Some((w, h)) => {
                let (w, h) = (u64::from(w.max(1)), u64::from(h.max(1)));
                let claude = (w.div_ceil(28) * h.div_ceil(28)).min(CLAUDE_MAX_IMAGE_TOKENS);
                let gemini = if w <= 384 && h <= 384 {
                    258
                } else {
                    258 * w.div_ceil(768) * h.div_ceil(768)
                };
                claude.max(gemini)
            }
        },
        _ if detail == ImageDetail::Original => other_openai(size),
        ImageProfile::Tiles { base, per_tile } => tile_tokens(base, per_tile, detail, size),
        ImageProfile::Patches { percent } => patch_tokens(
            size.map_or(MAX_PATCHES, |(w, h)| openai_patches(w, h)),
            percent,
        ),
        ImageProfile::OtherOpenAi => other_openai(size),
    }
}

/// The fewest bytes a second of audio in `format` can take.
fn min_bytes_per_second(format: AudioFormat) -> u64 {
    match format {
        AudioFormat::Wav => 4000,
        AudioFormat::Mp3 => 1000,
        AudioFormat::Other => 750,
    }
}

/// The estimated prompt tokens of one non-text part on `model`: always `estimated: true`; the
/// encoding is the model's, as for [`count_text`](crate::tokens::count_text).
///
/// ```
/// use budget_core::tokens::media::{count_media, ImageDetail, MediaPart};
///
/// // OpenAI's examples: a 1024 × 1024 image is 765 tokens on gpt-4o, any image at low detail 85.
/// let image = |detail, size| MediaPart::Image { detail, size };
/// assert_eq!(count_media("gpt-4o", &image(ImageDetail::High, Some((1024, 1024)))).tokens, 765);
/// assert_eq!(count_media("gpt-4o", &image(ImageDetail::Low, None)).tokens, 85);
/// // A URL's size is unknown: the worst case for the detail.
/// assert_eq!(count_media("gpt-4o", &image(ImageDetail::Auto, None)).tokens, 85 + 8 * 170);
/// ```
pub fn count_media(model: &str, part: &MediaPart) -> TokenCount {
    let tokens = match *part {
        MediaPart::Image { detail, size } => image_tokens(model, detail, size),
        MediaPart::Audio {
            format,
            bytes,
            seconds,
        } => {
            let seconds = seconds.unwrap_or_else(|| bytes.div_ceil(min_bytes_per_second(format)));
            seconds.saturating_mul(AUDIO_TOKENS_PER_SECOND)
        }
        MediaPart::File { pages } => {
            let page_image = image_tokens(model, ImageDetail::High, None);
            pages
                .unwrap_or(MAX_PDF_PAGES)
                .saturating_mul(page_image + PDF_PAGE_TEXT_TOKENS)
        }
    };
    TokenCount {
        tokens,
        estimated: true,
        encoding: model_info(model).map(|info| info.encoding),
    }
}

/// The size of an image sent as a `data:` URL, read from its PNG, GIF, WebP or JPEG header;
/// `None` for any other URL or an unreadable header (count the worst case then).
///
/// ```
/// use budget_core::tokens::media::image_size_from_data_url;
///
/// // A 1 × 1 PNG.
/// let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
/// assert_eq!(image_size_from_data_url(png), Some((1, 1)));
/// assert_eq!(image_size_from_data_url("https://example.com/cat.png"), None);
/// ```
pub fn image_size_from_data_url(url: &str) -> Option<(u32, u32)> {
    let data = data_url_payload(url)?;
    // Headers sit in the first bytes, except JPEG's frame header, which follows any metadata.
    let bytes = decode_base64_prefix(data, 256 * 1024);
    image_size(&bytes)
}

/// The base64 payload of a `data:…;base64,` URL.
pub(crate) fn data_url_payload(url: &str) -> Option<&str> {
    let rest = url.trim_start().strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    meta.ends_with(";base64").then_some(data)
}

fn be16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn le16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn le24(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 3)?;
    Some(u32::from(s[0]) | u32::from(s[1]) << 8 | u32::from(s[2]) << 16)
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Width and height from an image file's header.
fn image_size(b: &[u8]) -> Option<(u32, u32)> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") && b.get(12..16) == Some(b"IHDR") {
        let w = u32::from_be_bytes(b.get(16..20)?.try_into().ok()?);
        let h = u32::from_be_bytes(b.get(20..24)?.try_into().ok()?);
        return Some((w, h));
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        return Some((le16(b, 6)?, le16(b, 8)?));
    }
    if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        return match b.get(12..16)? {
            b"VP8 " => Some((le16(b, 26)? & 0x3fff, le16(b, 28)? & 0x3fff)),
            b"VP8L" => {
                let bits = le32(b, 21)?;
                Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
            }
            b"VP8X" => Some((le24(b, 24)? + 1, le24(b, 27)? + 1)),
            _ => None,
        };
    }
    if b.starts_with(&[0xff, 0xd8]) {
        return jpeg_size(b);
    }
    None
}

/// Walks JPEG segments to the first start-of-frame marker.
fn jpeg_size(b: &[u8]) -> Option<(u32, u32)> {
    let mut at = 2;
    loop {
        // Markers may be padded with any number of 0xff bytes.
        while *b.get(at)? == 0xff && *b.get(at + 1)? == 0xff {
            at += 1;
        }
        if *b.get(at)? != 0xff {
            return None;
        }
        let marker = *b.get(at + 1)?;
        let is_frame = matches!(marker, 0xc0..=0xcf) && !matches!(marker, 0xc4 | 0xc8 | 0xcc);
        if is_frame {
            return Some((be16(b, at + 7)?, be16(b, at + 5)?));
        }
        at += 2 + usize::try_from(be16(b, at + 2)?).ok()?;
    }
}

/// The duration of a WAV file in whole seconds (rounded up), from its `fmt ` and `data`
/// chunks.
pub(crate) fn wav_seconds(b: &[u8]) -> Option<u64> {
    if !b.starts_with(b"RIFF") || b.get(8..12) != Some(b"WAVE") {
        return None;
    }
    let (mut at, mut byte_rate) = (12usize, None);
    while at + 8 <= b.len() {
        let id = b.get(at..at + 4)?;
        let size = usize::try_from(le32(b, at + 4)?).ok()?;
        if id == b"fmt " {
            byte_rate = Some(u64::from(le32(b, at + 16)?));
        } else if id == b"data" {
            let rate = byte_rate.filter(|&r| r > 0)?;
            return Some((size as u64).div_ceil(rate));
        }
        at = at.checked_add(8 + size + (size & 1))?;
    }
    None
}

/// The number of pages of a PDF: `/Type /Page` objects, else the largest `/Count`.
pub(crate) fn pdf_pages(b: &[u8]) -> Option<u64> {
    let mut pages = 0u64;
    let mut count = None;
    let mut i = 0;
    while let Some(offset) = b.get(i..).and_then(|rest| find(rest, b"/Type")) {
        let mut j = i + offset + 5;
        while b.get(j).is_some_and(u8::is_ascii_whitespace) {
            j += 1;
        }
        if b.get(j..j + 5) == Some(b"/Page") && !b.get(j + 5).is_some_and(u8::is_ascii_alphabetic) {
            pages += 1;
        }
        i = j;
    }
    let mut i = 0;
    while let Some(offset) = b.get(i..).and_then(|rest| find(rest, b"/Count")) {
        let mut j = i + offset + 6;
        while b.get(j).is_some_and(u8::is_ascii_whitespace) {
            j += 1;
        }
        let digits = b
            .get(j..)?
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if let Some(n) = std::str::from_utf8(&b[j..j + digits])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            count = Some(count.map_or(n, |c: u64| c.max(n)));
        }
        i = j;
    }
    // The page tree's count covers pages stored in compressed object streams too.
    match (pages, count) {
        (0, count) => count.filter(|&n| n > 0),
        (pages, count) => Some(pages.max(count.unwrap_or(0))),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes standard or URL-safe base64 (padding and whitespace ignored) until `limit` bytes
/// are out or the text ends; stops at the first character that is not base64.
pub(crate) fn decode_base64_prefix(text: &str, limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(limit.min(text.len() / 4 * 3 + 3));
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' | b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => break,
        };
        acc = (acc << 6 | u32::from(v)) & 0xff_ffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            if out.len() >= limit {
                break;
            }
        }
    }
    out
}

/// The decoded size of base64 text (padding and whitespace excluded).
pub(crate) fn base64_decoded_len(text: &str) -> u64 {
    let symbols = text
        .bytes()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_'))
        .count() as u64;
    symbols * 3 / 4
}

/// A non-text part read from a request's base64 payload: an audio clip (its WAV header read
/// when it has one) or a PDF (its pages counted).
///
/// ```
/// use budget_core::tokens::media::{AudioFormat, MediaPart, audio_part, file_part};
///
/// // 2 kB of MP3 is at most 2 seconds (8 kbit/s is MP3's lowest bit rate).
/// let mp3 = "A".repeat(2668);
/// assert!(matches!(audio_part(AudioFormat::Mp3, &mp3),
///     MediaPart::Audio { bytes: 2001, seconds: None, .. }));
/// assert_eq!(file_part(None), MediaPart::File { pages: None });
/// ```
pub fn audio_part(format: AudioFormat, base64: &str) -> MediaPart {
    let seconds = match format {
        AudioFormat::Wav => wav_seconds(&decode_base64_prefix(base64, 4096)),
        _ => None,
    };
    MediaPart::Audio {
        format,
        bytes: base64_decoded_len(base64),
        seconds,
    }
}

/// A file part: a PDF's pages counted in its base64 data (`file_data`, with or without a
/// `data:` URL prefix); `None` (a file sent by id) leaves the pages unknown.
pub fn file_part(base64: Option<&str>) -> MediaPart {
    let pages = base64.and_then(|text| {
        let payload = data_url_payload(text).unwrap_or(text);
        pdf_pages(&decode_base64_prefix(payload, usize::MAX))
    });
    MediaPart::File { pages }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn media_parsers_never_panic_on_arbitrary_payloads(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
            prefix in prop::sample::select(vec![
                &b""[..], b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", b"GIF89a", b"RIFF\0\0\0\0WEBPVP8X",
                b"RIFF\0\0\0\0WEBPVP8L", b"RIFF\0\0\0\0WEBPVP8 ", b"\xff\xd8", b"RIFF\0\0\0\0WAVEfmt ",
                b"%PDF-1.7 /Type /Page /Count ",
            ]),
            model in "(?s).{0,12}",
        ) {
            let mut data = prefix.to_vec();
            data.extend(&bytes);
            let text = b64(&data);
            let _ = image_size_from_data_url(&format!("data:image/png;base64,{text}"));
            let _ = wav_seconds(&data);
            let _ = pdf_pages(&data);
            prop_assert_eq!(decode_base64_prefix(&text, usize::MAX), data);
            for part in [audio_part(AudioFormat::Wav, &text), file_part(Some(&text))] {
                prop_assert!(count_media(&model, &part).estimated);
            }
        }
    }

    fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
        out
    }

    fn image(model: &str, detail: ImageDetail, size: Option<(u32, u32)>) -> u64 {
        count_media(model, &MediaPart::Image { detail, size }).tokens
    }

    #[test]
    fn media_openai_documented_image_examples() {
        use ImageDetail::{Auto, High, Low};
        // OpenAI's vision guide: 1024 × 1024 high is 765; 2048 × 4096 high is 1105; low is 85.
        assert_eq!(image("gpt-4o", High, Some((1024, 1024))), 765);
        assert_eq!(image("gpt-4o", Auto, Some((2048, 4096))), 1105);
        assert_eq!(image("gpt-4o", Low, Some((4096, 8192))), 85);
        assert_eq!(
            image("gpt-4o-mini", High, Some((1024, 1024))),
            2833 + 4 * 5667
        );
        assert_eq!(image("gpt-4o-mini", Low, None), 2833);
        assert_eq!(image("o1", High, Some((512, 512))), 75 + 150);
        assert_eq!(image("gpt-5-2025-08-07", High, Some((512, 512))), 70 + 140);
        // Patches: gpt-4.1-mini's 1024 × 1024 is 1024 patches × 1.62; a huge image is capped.
        assert_eq!(image("gpt-4.1-mini", Low, Some((1024, 1024))), 1659);
        assert_eq!(image("gpt-4.1-mini", High, Some((4000, 1474))), 2489);
        assert_eq!(image("gpt-4.1-nano", High, None), 3779);
        assert_eq!(image("o4-mini", High, Some((64, 64))), 7);
    }

    #[test]
    fn media_unknown_sizes_take_the_worst_case() {
        use ImageDetail::{Auto, High, Low, Original};
        assert_eq!(image("gpt-4o", Auto, None), 85 + 8 * 170);
        // Every size is at most the worst case.
        for (w, h) in [
            (1, 1),
            (768, 2048),
            (2048, 768),
            (10_000, 10),
            (4096, 4096),
            (513, 2049),
        ] {
            assert!(
                image("gpt-4o", High, Some((w, h))) <= image("gpt-4o", High, None),
                "{w}x{h}"
            );
            assert!(image("gpt-4.1-mini", High, Some((w, h))) <= image("gpt-4.1-mini", High, None));
            assert!(image("gpt-5.4", High, Some((w, h))) <= image("gpt-5.4", High, None));
        }
        assert_eq!(image("gpt-4o", High, Some((768, 2048))), 85 + 8 * 170);
        // Unknown OpenAI families and `original` detail take the widest bound.
        assert_eq!(image("gpt-5.4", Low, None), 3779);
        assert_eq!(image("gpt-4o", Original, None), 3779);
        // Not OpenAI: Claude's high tier, or Gemini's tiles if more.
        assert_eq!(
            image("claude-sonnet-5-5", Auto, None),
            CLAUDE_MAX_IMAGE_TOKENS
        );
        assert_eq!(image("claude-sonnet-5-5", Auto, Some((960, 540))), 700);
        assert_eq!(image("gemini-2.5-pro", Auto, Some((300, 300))), 258);
        assert_eq!(image("gemini-2.5-pro", Auto, Some((8000, 8000))), 258 * 121);
        let count = count_media(
            "claude-sonnet-5-5",
            &MediaPart::Image {
                detail: Low,
                size: None,
            },
        );
        assert!(count.estimated && count.encoding.is_none());
        assert!(count_media("gpt-4o", &MediaPart::File { pages: Some(1) }).estimated);
    }

    #[test]
    fn media_image_headers() {
        let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
        assert_eq!(image_size_from_data_url(png), Some((1, 1)));
        let mut gif = b"GIF89a".to_vec();
        gif.extend([0x40, 0x01, 0xf0, 0x00, 0, 0, 0]);
        let url = format!("data:image/gif;base64,{}", b64(&gif));
        assert_eq!(image_size_from_data_url(&url), Some((320, 240)));
        // JPEG: an APP0 segment, then a baseline frame header of 1920 × 1080.
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0, 0];
        jpeg.extend([0xff, 0xc0, 0x00, 0x11, 0x08, 0x04, 0x38, 0x07, 0x80, 3]);
        let url = format!("data:image/jpeg;base64,{}", b64(&jpeg));
        assert_eq!(image_size_from_data_url(&url), Some((1920, 1080)));
        // WebP VP8X: canvas 1000 × 500.
        let mut webp = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
        webp.extend([0xe7, 0x03, 0x00, 0xf3, 0x01, 0x00]);
        let url = format!("data:image/webp;base64,{}", b64(&webp));
        assert_eq!(image_size_from_data_url(&url), Some((1000, 500)));
        for bad in [
            "data:image/png;base64,",
            "data:,hello",
            "data:image/png;base64,!!!",
            "",
        ] {
            assert_eq!(image_size_from_data_url(bad), None, "{bad:?}");
        }
        // Truncated headers never panic.
        for len in 0..jpeg.len() {
            let _ = image_size(&jpeg[..len]);
            let _ = image_size(&webp[..len.min(webp.len())]);
        }
    }

    #[test]
    fn media_audio_and_pdf_bounds() {
        // 3 s of 16 kHz 16-bit mono PCM: a WAV header gives the duration exactly.
        let mut wav =
            b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0\0\x7d\0\0\x02\0\x10\0data"
                .to_vec();
        wav.extend(96_000u32.to_le_bytes());
        wav.extend(vec![0u8; 64]);
        let part = audio_part(AudioFormat::Wav, &b64(&wav));
        assert!(
            matches!(
                part,
                MediaPart::Audio {
                    seconds: Some(3),
                    ..
                }
            ),
            "{part:?}"
        );
        assert_eq!(count_media("gpt-4o-audio-preview", &part).tokens, 3 * 32);
        // Without a header: bounded by the format's lowest bit rate.
        let mp3 = MediaPart::Audio {
            format: AudioFormat::Mp3,
            bytes: 10_000,
            seconds: None,
        };
        assert_eq!(count_media("gpt-4o", &mp3).tokens, 10 * 32);
        // A PDF with two pages.
        let pdf = b"%PDF-1.4\n1 0 obj<</Type /Pages /Count 2 /Kids[2 0 R 3 0 R]>>endobj\n2 0 obj<</Type/Page>>endobj 3 0 obj<</Type /Page /Parent 1 0 R>>endobj";
        assert_eq!(
            file_part(Some(&b64(pdf))),
            MediaPart::File { pages: Some(2) }
        );
        let url = format!("data:application/pdf;base64,{}", b64(pdf));
        assert_eq!(file_part(Some(&url)), MediaPart::File { pages: Some(2) });
        // Pages in compressed object streams: the page tree's count.
        let packed = b"%PDF-1.7 <</Type/Catalog>> <</Count 12>>";
        assert_eq!(pdf_pages(packed), Some(12));
        assert_eq!(pdf_pages(b"not a pdf"), None);
        let one_page = count_media("gpt-4o", &MediaPart::File { pages: Some(1) }).tokens;
        assert_eq!(one_page, 85 + 8 * 170 + PDF_PAGE_TEXT_TOKENS);
        assert_eq!(
            count_media("gpt-4o", &MediaPart::File { pages: None }).tokens,
            MAX_PDF_PAGES * one_page
        );
    }
}
