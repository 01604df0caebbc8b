//! WeCom's callback message encryption (WXBizMsgCrypt), so that a callback is only believed when it
//! carries WeCom's signature and decrypts to our own corp, and a passive reply can be encrypted back.
//!
//! The scheme (developer.work.weixin.qq.com/document/path/90968, "加解密方案说明"):
//!
//! - `msg_signature = hex(sha1(concat(sort([token, timestamp, nonce, encrypt]))))`;
//! - `AESKey = base64_decode(EncodingAESKey + "=")`, 32 bytes; the IV is its first 16 bytes;
//! - AES-256-CBC over `random(16) ‖ msg_len(4, big-endian) ‖ msg ‖ receiveid`, PKCS#7-padded to a
//!   multiple of **32** bytes (not AES's 16);
//! - `receiveid` is the corp id for a self-built app (the suite id for third-party suite callbacks).
//!
//! Everything here is pure: the replay check takes `now` (Unix seconds) from the caller.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::Deserialize;
use sha1::{Digest, Sha1};

/// How far (seconds) a callback's `timestamp` may be from `now` unless configured otherwise.
pub const DEFAULT_REPLAY_WINDOW_SECS: i64 = 300;

/// WeCom pads to a multiple of this many bytes.
const PAD_BLOCK: usize = 32;
const AES_BLOCK: usize = 16;
const RANDOM_PREFIX: usize = 16;

/// EncodingAESKey is 43 characters: its last one carries 2 bits beyond the 32 bytes, which
/// WeCom does not keep at zero (a strict decoder refuses its own official sample key).
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// Why a callback was refused. Each says which check failed, so a refusal can be logged precisely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("encoding_aes_key must be 43 base64 characters that decode to 32 bytes")]
    BadAesKey,
    #[error("msg_signature does not match the message")]
    BadSignature,
    #[error("the ciphertext is not valid base64")]
    BadBase64,
    #[error("the ciphertext is {0} bytes, not a positive multiple of the 16-byte AES block")]
    TruncatedBlock(usize),
    #[error("the decrypted message has invalid PKCS#7 padding")]
    BadPadding,
    #[error("the decrypted message declares {declared} bytes but holds {available}")]
    BadLength { declared: usize, available: usize },
    #[error("the message is addressed to receiveid {found:?}, not {expected:?}")]
    ReceiveIdMismatch { expected: String, found: String },
    #[error("the decrypted message is not UTF-8")]
    NotUtf8,
    #[error("malformed callback XML: {0}")]
    MalformedXml(String),
    #[error("timestamp {0:?} is not a number of seconds")]
    BadTimestamp(String),
    #[error("timestamp {timestamp} is {skew} s away from now ({now}), outside the {window} s replay window")]
    StaleTimestamp { timestamp: i64, now: i64, skew: i64, window: i64 },
}

/// The envelope of an encrypted callback POST body, once verified and decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptedCallback {
    /// `<ToUserName>`: the corp id (or suite id) the callback was sent to.
    pub to_user_name: Option<String>,
    /// `<AgentID>`: the app that received it, when WeCom names one.
    pub agent_id: Option<String>,
    /// The decrypted message, an XML document (see [`super::callback::parse`]).
    pub plaintext: String,
}

/// The encryption context of one callback URL: token, key and the receiveid it must decrypt to.
#[derive(Clone)]
pub struct MsgCrypt {
    token: String,
    key: [u8; 32],
    receive_id: String,
    replay_window_secs: i64,
}

impl std::fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgCrypt")
            .field("token", &"***")
            .field("key", &"***")
            .field("receive_id", &self.receive_id)
            .field("replay_window_secs", &self.replay_window_secs)
            .finish()
    }
}

impl MsgCrypt {
    /// `encoding_aes_key` is the 43-character EncodingAESKey of the callback configuration;
    /// `receive_id` the corp id (self-built apps) or suite id (third-party suites).
    pub fn new(token: &str, encoding_aes_key: &str, receive_id: &str) -> Result<MsgCrypt, CryptoError> {
        if encoding_aes_key.len() != 43 {
            return Err(CryptoError::BadAesKey);
        }
        let decoded = KEY_BASE64.decode(encoding_aes_key).map_err(|_| CryptoError::BadAesKey)?;
        let key: [u8; 32] = decoded.try_into().map_err(|_| CryptoError::BadAesKey)?;
        Ok(MsgCrypt {
            token: token.to_string(),
            key,
            receive_id: receive_id.to_string(),
            replay_window_secs: DEFAULT_REPLAY_WINDOW_SECS,
        })
    }

    /// Accept timestamps at most `secs` away from `now` (default [`DEFAULT_REPLAY_WINDOW_SECS`]).
    pub fn with_replay_window(mut self, secs: i64) -> MsgCrypt {
        self.replay_window_secs = secs;
        self
    }

    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    /// The `msg_signature` WeCom computes over one message.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        signature(&self.token, timestamp, nonce, encrypt)
    }

    /// Answers WeCom's URL check (`GET ?msg_signature&timestamp&nonce&echostr`): verifies the
    /// signature and the timestamp and returns the decrypted echostr, the body to answer with.
    /// `echostr` must already be URL-decoded.
    pub fn verify_url(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        echostr: &str,
        now: i64,
    ) -> Result<String, CryptoError> {
        self.check(msg_signature, timestamp, nonce, echostr, now)?;
        self.decrypt(echostr)
    }

    /// Verifies and decrypts a callback POST body (`<xml><ToUserName/><Encrypt/><AgentID/></xml>`).
    pub fn decrypt_message(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        body: &str,
        now: i64,
    ) -> Result<DecryptedCallback, CryptoError> {
        let envelope: Envelope = quick_xml::de::from_str(body).map_err(|e| CryptoError::MalformedXml(e.to_string()))?;
        let encrypt = envelope.encrypt.trim();
        if encrypt.is_empty() {
            return Err(CryptoError::MalformedXml("<Encrypt> is empty".into()));
        }
        self.check(msg_signature, timestamp, nonce, encrypt, now)?;
        Ok(DecryptedCallback {
            to_user_name: envelope.to_user_name.filter(|s| !s.is_empty()),
            agent_id: envelope.agent_id.filter(|s| !s.is_empty()),
            plaintext: self.decrypt(encrypt)?,
        })
    }

    /// Encrypts a passive reply into WeCom's reply XML (Encrypt, MsgSignature, TimeStamp, Nonce).
    pub fn encrypt_reply(&self, plaintext: &str, timestamp: i64, nonce: &str) -> String {
        self.encrypt_reply_with_random(plaintext, timestamp, nonce, rand::random())
    }

    /// [`MsgCrypt::encrypt_reply`] with a caller-chosen random prefix (reproducible tests).
    pub fn encrypt_reply_with_random(&self, plaintext: &str, timestamp: i64, nonce: &str, random: [u8; 16]) -> String {
        let encrypt = self.encrypt_with_random(plaintext, random);
        let timestamp = timestamp.to_string();
        let signature = self.signature(&timestamp, nonce, &encrypt);
        format!(
            "<xml><Encrypt>{}</Encrypt><MsgSignature>{}</MsgSignature><TimeStamp>{timestamp}</TimeStamp>\
             <Nonce>{}</Nonce></xml>",
            cdata(&encrypt),
            cdata(&signature),
            cdata(nonce)
        )
    }

    /// The base64 ciphertext of `plaintext` (the `<Encrypt>` of a reply, or a stand-in's callback).
    pub fn encrypt(&self, plaintext: &str) -> String {
        self.encrypt_with_random(plaintext, rand::random())
    }

    /// [`MsgCrypt::encrypt`] with a caller-chosen random prefix.
    pub fn encrypt_with_random(&self, plaintext: &str, random: [u8; 16]) -> String {
        let msg = plaintext.as_bytes();
        let unpadded = RANDOM_PREFIX + 4 + msg.len() + self.receive_id.len();
        let pad = PAD_BLOCK - unpadded % PAD_BLOCK; // 1..=32: a full block when already aligned
        let mut buf = Vec::with_capacity(unpadded + pad);
        buf.extend_from_slice(&random);
        // A message longer than 4 GiB cannot arrive here: callbacks and replies are a few KB.
        buf.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(self.receive_id.as_bytes());
        buf.resize(unpadded + pad, pad as u8);
        let len = buf.len();
        let cipher = Aes256CbcEnc::new(&self.key.into(), self.iv().into());
        cipher
            .encrypt_padded_mut::<NoPadding>(&mut buf, len)
            .expect("the buffer is padded to a multiple of the block size");
        STANDARD.encode(buf)
    }

    /// Decrypts a base64 ciphertext and checks its length field and receiveid; returns the message.
    pub fn decrypt(&self, encrypt: &str) -> Result<String, CryptoError> {
        let mut buf = STANDARD.decode(encrypt.trim()).map_err(|_| CryptoError::BadBase64)?;
        let len = buf.len();
        if len == 0 || len % AES_BLOCK != 0 {
            return Err(CryptoError::TruncatedBlock(len));
        }
        let cipher = Aes256CbcDec::new(&self.key.into(), self.iv().into());
        let plain = cipher.decrypt_padded_mut::<NoPadding>(&mut buf).map_err(|_| CryptoError::TruncatedBlock(len))?;
        let unpadded = strip_padding(plain)?;
        let available = unpadded.len().saturating_sub(RANDOM_PREFIX + 4);
        if unpadded.len() < RANDOM_PREFIX + 4 {
            return Err(CryptoError::BadLength { declared: 0, available });
        }
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(&unpadded[RANDOM_PREFIX..RANDOM_PREFIX + 4]);
        let declared = u32::from_be_bytes(len_bytes) as usize;
        if declared > available {
            return Err(CryptoError::BadLength { declared, available });
        }
        let body = &unpadded[RANDOM_PREFIX + 4..];
        let (msg, receive_id) = body.split_at(declared);
        if receive_id != self.receive_id.as_bytes() {
            return Err(CryptoError::ReceiveIdMismatch {
                expected: self.receive_id.clone(),
                found: String::from_utf8_lossy(receive_id).into_owned(),
            });
        }
        String::from_utf8(msg.to_vec()).map_err(|_| CryptoError::NotUtf8)
    }

    fn iv(&self) -> &[u8; 16] {
        self.key[..16].try_into().expect("the key is 32 bytes")
    }

    fn check(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
        now: i64,
    ) -> Result<(), CryptoError> {
        let expected = self.signature(timestamp, nonce, encrypt);
        if !constant_time_eq(expected.as_bytes(), msg_signature.trim().to_ascii_lowercase().as_bytes()) {
            return Err(CryptoError::BadSignature);
        }
        check_timestamp(timestamp, now, self.replay_window_secs)
    }
}

/// `hex(sha1(concat(sort([token, timestamp, nonce, encrypt]))))`.
pub fn signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Refuses a timestamp more than `window` seconds away from `now` (either way): a replayed
/// callback carries its original timestamp, which its signature covers.
pub fn check_timestamp(timestamp: &str, now: i64, window: i64) -> Result<(), CryptoError> {
    let value: i64 = timestamp.trim().parse().map_err(|_| CryptoError::BadTimestamp(timestamp.to_string()))?;
    let skew = value.saturating_sub(now).saturating_abs();
    if skew > window {
        return Err(CryptoError::StaleTimestamp { timestamp: value, now, skew, window });
    }
    Ok(())
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "ToUserName", default)]
    to_user_name: Option<String>,
    #[serde(rename = "Encrypt")]
    encrypt: String,
    #[serde(rename = "AgentID", default)]
    agent_id: Option<String>,
}

/// PKCS#7 with WeCom's 32-byte block: 1..=32 bytes, each equal to the count.
fn strip_padding(plain: &[u8]) -> Result<&[u8], CryptoError> {
    let pad = *plain.last().ok_or(CryptoError::BadPadding)? as usize;
    if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
        return Err(CryptoError::BadPadding);
    }
    let (body, padding) = plain.split_at(plain.len() - pad);
    if padding.iter().any(|&b| b as usize != pad) {
        return Err(CryptoError::BadPadding);
    }
    Ok(body)
}

/// Signature comparison that does not stop at the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Wraps text in CDATA, splitting any `]]>` it contains.
pub(crate) fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Official vectors, set 1: developer.work.weixin.qq.com/document/path/90968 ("加解密方案说明",
    // 举例说明) and the WXBizMsgCrypt samples (e.g. the C# / Python `Sample` files of WeCom's
    // callback libraries, mirrored at github.com/sbzhu/weworkapi_python callback/Sample.py).
    const TOKEN: &str = "QDG6eK";
    const CORP_ID: &str = "wx5823bf96d3bd56c7";
    const AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
    const VERIFY_SIG: &str = "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3";
    const VERIFY_TS: &str = "1409659589";
    const VERIFY_NONCE: &str = "263014780";
    const VERIFY_ECHO: &str =
        "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==";
    const POST_SIG: &str = "477715d11cdb4164915debcba66cb864d751f3e6";
    const POST_TS: &str = "1409659813";
    const POST_NONCE: &str = "1372623149";
    const POST_ENCRYPT: &str = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==";
    const POST_PLAINTEXT: &str = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n\
<FromUserName><![CDATA[mycreate]]></FromUserName>\n<CreateTime>1409659813</CreateTime>\n\
<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[hello]]></Content>\n\
<MsgId>4561255354251345929</MsgId>\n<AgentID>218</AgentID>\n</xml>";

    // Official vectors, set 2: github.com/sbzhu/weworkapi_python callback/Sample.py (WeCom's
    // Python callback sample): corp ww1436e0e65a779aee.
    const TOKEN_2: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
    const AES_KEY_2: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
    const CORP_ID_2: &str = "ww1436e0e65a779aee";

    fn official() -> MsgCrypt {
        MsgCrypt::new(TOKEN, AES_KEY, CORP_ID).unwrap()
    }

    fn post_body() -> String {
        format!(
            "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[{POST_ENCRYPT}]]></Encrypt>\
             <AgentID><![CDATA[218]]></AgentID></xml>"
        )
    }

    fn ts(text: &str) -> i64 {
        text.parse().unwrap()
    }

    #[test]
    fn official_signatures() {
        assert_eq!(signature(TOKEN, VERIFY_TS, VERIFY_NONCE, VERIFY_ECHO), VERIFY_SIG);
        assert_eq!(signature(TOKEN, POST_TS, POST_NONCE, POST_ENCRYPT), POST_SIG);
    }

    #[test]
    fn official_verify_url() {
        let echo = official().verify_url(VERIFY_SIG, VERIFY_TS, VERIFY_NONCE, VERIFY_ECHO, ts(VERIFY_TS)).unwrap();
        assert_eq!(echo, "1616140317555161061");
    }

    #[test]
    fn official_post_message() {
        let decrypted = official().decrypt_message(POST_SIG, POST_TS, POST_NONCE, &post_body(), ts(POST_TS)).unwrap();
        assert_eq!(decrypted.plaintext, POST_PLAINTEXT);
        assert_eq!(decrypted.to_user_name.as_deref(), Some(CORP_ID));
        assert_eq!(decrypted.agent_id.as_deref(), Some("218"));
    }

    #[test]
    fn official_second_sample() {
        let crypt = MsgCrypt::new(TOKEN_2, AES_KEY_2, CORP_ID_2).unwrap();
        let echo = crypt
            .verify_url(
                "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb",
                "1476416373",
                "47744683",
                "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA==",
                1_476_416_373,
            )
            .unwrap();
        assert_eq!(echo, "1288432023552776189");
        let body = "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName>\n<Encrypt><![CDATA[\
Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew+kkYcD+F\
q72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbjbf\
vhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXA\
yh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+]]></Encrypt>\n<AgentID><![CDATA[1000002]]></AgentID>\n</xml>";
        let decrypted = crypt
            .decrypt_message(
                "0c3914025cb4b4d68103f6bfc8db550f79dcf48e",
                "1476422779",
                "1597212914",
                body,
                1_476_422_779,
            )
            .unwrap();
        assert_eq!(
            decrypted.plaintext,
            "<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName>\
             <CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content>\
             <MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>"
        );
        assert_eq!(decrypted.agent_id.as_deref(), Some("1000002"));
    }

    #[test]
    fn a_wrong_signature_is_refused() {
        let tampered = POST_SIG.replace('4', "5");
        let err = official().decrypt_message(&tampered, POST_TS, POST_NONCE, &post_body(), ts(POST_TS)).unwrap_err();
        assert_eq!(err, CryptoError::BadSignature);
        // The signature covers the timestamp: a replay with a fresh timestamp fails the same way.
        let err =
            official().verify_url(VERIFY_SIG, "1409659590", VERIFY_NONCE, VERIFY_ECHO, 1_409_659_590).unwrap_err();
        assert_eq!(err, CryptoError::BadSignature);
    }

    #[test]
    fn a_stale_or_future_timestamp_is_refused() {
        let crypt = official();
        let err = crypt.verify_url(VERIFY_SIG, VERIFY_TS, VERIFY_NONCE, VERIFY_ECHO, ts(VERIFY_TS) + 301).unwrap_err();
        assert!(matches!(err, CryptoError::StaleTimestamp { skew: 301, window: 300, .. }), "{err:?}");
        let err = crypt.verify_url(VERIFY_SIG, VERIFY_TS, VERIFY_NONCE, VERIFY_ECHO, ts(VERIFY_TS) - 301).unwrap_err();
        assert!(matches!(err, CryptoError::StaleTimestamp { .. }), "{err:?}");
        assert!(crypt.verify_url(VERIFY_SIG, VERIFY_TS, VERIFY_NONCE, VERIFY_ECHO, ts(VERIFY_TS) + 300).is_ok());
        let strict = official().with_replay_window(10);
        assert!(strict.verify_url(VERIFY_SIG, VERIFY_TS, VERIFY_NONCE, VERIFY_ECHO, ts(VERIFY_TS) + 11).is_err());
        assert_eq!(check_timestamp("soon", 0, 300), Err(CryptoError::BadTimestamp("soon".into())));
    }

    #[test]
    fn truncated_or_non_base64_ciphertext_is_refused() {
        let crypt = official();
        let raw = STANDARD.decode(POST_ENCRYPT).unwrap();
        assert_eq!(
            crypt.decrypt(&STANDARD.encode(&raw[..raw.len() - 5])),
            Err(CryptoError::TruncatedBlock(raw.len() - 5))
        );
        assert_eq!(crypt.decrypt(""), Err(CryptoError::TruncatedBlock(0)));
        assert_eq!(crypt.decrypt("not base64 at all!"), Err(CryptoError::BadBase64));
    }

    #[test]
    fn bad_padding_is_refused() {
        // A block-aligned ciphertext whose plaintext ends in a byte outside 1..=32.
        let crypt = official();
        let mut buf = [0x41u8; 64];
        buf[63] = 33;
        let cipher = Aes256CbcEnc::new(&crypt.key.into(), crypt.iv().into());
        cipher.encrypt_padded_mut::<NoPadding>(&mut buf, 64).unwrap();
        assert_eq!(crypt.decrypt(&STANDARD.encode(buf)), Err(CryptoError::BadPadding));
        // ... and one whose padding bytes disagree.
        let mut buf = [0x41u8; 64];
        buf[63] = 3;
        buf[62] = 3;
        let cipher = Aes256CbcEnc::new(&crypt.key.into(), crypt.iv().into());
        cipher.encrypt_padded_mut::<NoPadding>(&mut buf, 64).unwrap();
        assert_eq!(crypt.decrypt(&STANDARD.encode(buf)), Err(CryptoError::BadPadding));
    }

    #[test]
    fn a_length_field_beyond_the_message_is_refused() {
        let crypt = official();
        let mut buf = vec![0u8; 16];
        buf.extend_from_slice(&1000u32.to_be_bytes());
        buf.extend_from_slice(b"short");
        let pad = PAD_BLOCK - buf.len() % PAD_BLOCK;
        buf.resize(buf.len() + pad, pad as u8);
        let len = buf.len();
        let cipher = Aes256CbcEnc::new(&crypt.key.into(), crypt.iv().into());
        cipher.encrypt_padded_mut::<NoPadding>(&mut buf, len).unwrap();
        assert_eq!(crypt.decrypt(&STANDARD.encode(buf)), Err(CryptoError::BadLength { declared: 1000, available: 5 }));
    }

    #[test]
    fn another_receive_id_is_refused() {
        let other = MsgCrypt::new(TOKEN, AES_KEY, "ww-someone-else").unwrap();
        let err = other.decrypt_message(POST_SIG, POST_TS, POST_NONCE, &post_body(), ts(POST_TS)).unwrap_err();
        assert_eq!(err, CryptoError::ReceiveIdMismatch { expected: "ww-someone-else".into(), found: CORP_ID.into() });
    }

    #[test]
    fn bad_keys_and_bad_xml_are_refused() {
        assert_eq!(MsgCrypt::new(TOKEN, "short", CORP_ID).unwrap_err(), CryptoError::BadAesKey);
        assert_eq!(MsgCrypt::new(TOKEN, &"!".repeat(43), CORP_ID).unwrap_err(), CryptoError::BadAesKey);
        let err = official().decrypt_message(POST_SIG, POST_TS, POST_NONCE, "<xml><Encrypt>", 0).unwrap_err();
        assert!(matches!(err, CryptoError::MalformedXml(_)), "{err:?}");
        let err = official().decrypt_message(POST_SIG, POST_TS, POST_NONCE, "<xml><To>x</To></xml>", 0).unwrap_err();
        assert!(matches!(err, CryptoError::MalformedXml(_)), "{err:?}");
    }

    #[test]
    fn replies_round_trip_and_pad_to_32_bytes() {
        let crypt = official();
        for len in [0usize, 1, 10, 11, 12, 13, 44, 200] {
            let text = "测".repeat(len / 3) + &"x".repeat(len % 3);
            let encrypt = crypt.encrypt(&text);
            let raw = STANDARD.decode(&encrypt).unwrap();
            assert_eq!(raw.len() % PAD_BLOCK, 0, "{len}");
            assert_eq!(crypt.decrypt(&encrypt).unwrap(), text);
        }
        let reply = crypt.encrypt_reply("<xml><Content><![CDATA[hi]]></Content></xml>", 1_700_000_000, "nonce-1");
        #[derive(Deserialize)]
        struct Reply {
            #[serde(rename = "MsgSignature")]
            signature: String,
            #[serde(rename = "TimeStamp")]
            timestamp: String,
            #[serde(rename = "Nonce")]
            nonce: String,
        }
        let parsed: Reply = quick_xml::de::from_str(&reply).unwrap();
        assert_eq!(parsed.nonce, "nonce-1");
        let back =
            crypt.decrypt_message(&parsed.signature, &parsed.timestamp, &parsed.nonce, &reply, 1_700_000_000).unwrap();
        assert_eq!(back.plaintext, "<xml><Content><![CDATA[hi]]></Content></xml>");
        // Deterministic with a fixed random prefix.
        assert_eq!(crypt.encrypt_with_random("a", [7; 16]), crypt.encrypt_with_random("a", [7; 16]));
    }

    #[test]
    fn debug_hides_the_secrets() {
        let text = format!("{:?}", official());
        assert!(!text.contains(TOKEN) && text.contains(CORP_ID), "{text}");
    }
}
