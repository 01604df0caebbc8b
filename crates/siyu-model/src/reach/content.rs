//! What one message carries once rendered: the text and the attachments a channel understands.
//!
//! The shapes follow WeCom's `add_msg_template` / `send_welcome_msg` (text plus up to nine
//! attachments of type image, link, miniprogram, video or file); other channels use the subset
//! they support (see [`MessageContent::check_for`]).

use serde::{Deserialize, Serialize};

use crate::Channel;

/// A rendered message, ready for a connector.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// One attachment, as WeCom documents them for customer messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Attachment {
    /// An image by URL (`pic_url`) or by an uploaded WeCom media id.
    Image {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pic_url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
    },
    /// A link card (图文链接).
    Link {
        title: String,
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pic_url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        desc: Option<String>,
    },
    /// A mini-program card (小程序卡片).
    MiniProgram {
        title: String,
        appid: String,
        page: String,
        pic_media_id: String,
    },
    Video {
        media_id: String,
    },
    File {
        media_id: String,
    },
}

impl MessageContent {
    /// Whether `channel` can deliver this message as it is: every channel needs a text or an
    /// attachment and the attachments' required fields; WeCom customer messages take a text and
    /// up to nine attachments of any kind, a Douyin private message is a text or one image, a
    /// WeChat official account's customer-service message is exactly one text, image, link or
    /// mini-program card. Other channels (webhooks, the log) take anything non-empty.
    ///
    /// Checked before a message is queued, so a connector never learns about a shape from the
    /// platform's error code.
    pub fn check_for(&self, channel: Channel) -> Result<(), ContentError> {
        let text = self.text.as_deref().filter(|t| !is_blank(t));
        if text.is_none() && self.attachments.is_empty() {
            return Err(ContentError::whole("the message is empty: it needs a text or an attachment"));
        }
        for (i, attachment) in self.attachments.iter().enumerate() {
            attachment.check_required(i)?;
        }
        match channel {
            Channel::Wecom => self.check_wecom(text),
            Channel::Douyin => self.check_douyin(text),
            Channel::WechatMp => self.check_wechat_mp(text),
            _ => Ok(()),
        }
    }

    fn check_wecom(&self, text: Option<&str>) -> Result<(), ContentError> {
        if let Some(text) = text {
            max_bytes("text", text, WECOM_TEXT_BYTES)?;
        }
        if self.attachments.len() > WECOM_MAX_ATTACHMENTS {
            return Err(ContentError::new(
                "attachments",
                format!(
                    "wecom takes at most {WECOM_MAX_ATTACHMENTS} attachments, this message has {}",
                    self.attachments.len()
                ),
            ));
        }
        for (i, attachment) in self.attachments.iter().enumerate() {
            let at = |field: &str| format!("attachments[{i}].{field}");
            match attachment {
                Attachment::Link { title, url, pic_url, desc } => {
                    max_bytes(&at("title"), title, WECOM_LINK_TITLE_BYTES)?;
                    max_bytes(&at("url"), url, WECOM_URL_BYTES)?;
                    if let Some(pic_url) = pic_url {
                        max_bytes(&at("pic_url"), pic_url, WECOM_URL_BYTES)?;
                    }
                    if let Some(desc) = desc {
                        max_bytes(&at("desc"), desc, WECOM_LINK_DESC_BYTES)?;
                    }
                }
                Attachment::MiniProgram { title, .. } => {
                    max_bytes(&at("title"), title, WECOM_MINI_PROGRAM_TITLE_BYTES)?;
                }
                Attachment::Image { .. } | Attachment::Video { .. } | Attachment::File { .. } => {}
            }
        }
        Ok(())
    }

    fn check_douyin(&self, text: Option<&str>) -> Result<(), ContentError> {
        match (text, self.attachments.as_slice()) {
            (Some(_), []) | (None, [Attachment::Image { .. }]) => Ok(()),
            (Some(_), [_, ..]) => {
                Err(ContentError::new("attachments", "a douyin private message is a text or one image, not both"))
            }
            (None, [other]) => Err(ContentError::new(
                "attachments[0]",
                format!("a douyin private message cannot carry a {}, only a text or one image", other.kind()),
            )),
            (None, _) => Err(ContentError::new("attachments", "a douyin private message carries one image at most")),
        }
    }

    fn check_wechat_mp(&self, text: Option<&str>) -> Result<(), ContentError> {
        const ONE: &str = "a wechat_mp customer-service message is exactly one text, image, link or mini-program card";
        match (text, self.attachments.as_slice()) {
            (Some(_), []) => Ok(()),
            (None, [Attachment::Image { media_id, .. }]) => match media_id.as_deref().filter(|m| !is_blank(m)) {
                Some(_) => Ok(()),
                None => Err(ContentError::new("attachments[0].media_id", "wechat_mp sends images by media_id only")),
            },
            (None, [Attachment::Link { .. } | Attachment::MiniProgram { .. }]) => Ok(()),
            (None, [other]) => Err(ContentError::new("attachments[0]", format!("{ONE}, not a {}", other.kind()))),
            (Some(_), [_, ..]) => {
                Err(ContentError::new("attachments", format!("{ONE}: drop the text or the attachments")))
            }
            (None, _) => Err(ContentError::new("attachments", ONE)),
        }
    }
}

/// Why a channel cannot deliver a message, naming the field at fault (`text`,
/// `attachments[1].url`, or empty for the message as a whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{message}", field, if field.is_empty() { "" } else { ": " })]
pub struct ContentError {
    pub field: String,
    pub message: String,
}

impl ContentError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> ContentError {
        ContentError { field: field.into(), message: message.into() }
    }

    fn whole(message: impl Into<String>) -> ContentError {
        ContentError::new("", message)
    }
}

/// WeCom's documented limits for customer messages (`add_msg_template`); sizes in bytes.
const WECOM_MAX_ATTACHMENTS: usize = 9;
const WECOM_TEXT_BYTES: usize = 4000;
const WECOM_LINK_TITLE_BYTES: usize = 128;
const WECOM_LINK_DESC_BYTES: usize = 512;
const WECOM_URL_BYTES: usize = 2048;
const WECOM_MINI_PROGRAM_TITLE_BYTES: usize = 64;

fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

fn max_bytes(field: &str, value: &str, max: usize) -> Result<(), ContentError> {
    if value.len() <= max {
        return Ok(());
    }
    Err(ContentError::new(field, format!("wecom takes at most {max} bytes here, this is {} bytes", value.len())))
}

impl Attachment {
    /// The fields a platform cannot do without, whatever the channel.
    fn check_required(&self, index: usize) -> Result<(), ContentError> {
        let need = |field: &str, value: &str| {
            if !is_blank(value) {
                return Ok(());
            }
            Err(ContentError::new(
                format!("attachments[{index}].{field}"),
                format!("a {} needs a {field}", self.kind()),
            ))
        };
        match self {
            Attachment::Image { pic_url, media_id } => {
                let has = |v: &Option<String>| v.as_deref().is_some_and(|v| !is_blank(v));
                if has(pic_url) || has(media_id) {
                    return Ok(());
                }
                Err(ContentError::new(format!("attachments[{index}]"), "an image needs a pic_url or a media_id"))
            }
            Attachment::Link { title, url, .. } => {
                need("title", title)?;
                need("url", url)
            }
            Attachment::MiniProgram { title, appid, page, pic_media_id } => {
                need("title", title)?;
                need("appid", appid)?;
                need("page", page)?;
                need("pic_media_id", pic_media_id)
            }
            Attachment::Video { media_id } | Attachment::File { media_id } => need("media_id", media_id),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Attachment::Image { .. } => "image",
            Attachment::Link { .. } => "link",
            Attachment::MiniProgram { .. } => "mini_program",
            Attachment::Video { .. } => "video",
            Attachment::File { .. } => "file",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> MessageContent {
        MessageContent { text: Some(t.to_string()), attachments: vec![] }
    }

    fn image() -> Attachment {
        Attachment::Image { pic_url: Some("https://x.example/a.png".to_string()), media_id: None }
    }

    fn link(title: &str, url: &str) -> Attachment {
        Attachment::Link { title: title.to_string(), url: url.to_string(), pic_url: None, desc: None }
    }

    fn refusal(content: &MessageContent, channel: Channel) -> (String, String) {
        let e = content.check_for(channel).expect_err("the channel refuses it");
        (e.field, e.message)
    }

    #[test]
    fn every_channel_needs_something_to_send() {
        let empty = MessageContent { text: Some("  ".to_string()), attachments: vec![] };
        for channel in [Channel::Wecom, Channel::Douyin, Channel::WechatMp, Channel::Other] {
            let e = empty.check_for(channel).unwrap_err();
            assert_eq!(e.to_string(), "the message is empty: it needs a text or an attachment");
        }
        assert_eq!(text("hi").check_for(Channel::Web), Ok(()));
    }

    #[test]
    fn wecom_takes_a_text_and_up_to_nine_attachments_within_its_limits() {
        let mut content = text("新品");
        content.attachments = vec![image(); 9];
        assert_eq!(content.check_for(Channel::Wecom), Ok(()));
        content.attachments.push(link("t", "https://x.example"));
        assert_eq!(
            refusal(&content, Channel::Wecom),
            ("attachments".to_string(), "wecom takes at most 9 attachments, this message has 10".to_string())
        );
        let long = MessageContent { text: None, attachments: vec![link(&"a".repeat(129), "https://x.example")] };
        assert_eq!(
            refusal(&long, Channel::Wecom),
            ("attachments[0].title".to_string(), "wecom takes at most 128 bytes here, this is 129 bytes".to_string())
        );
        assert_eq!(long.check_for(Channel::Other), Ok(()), "the limit is wecom's");
    }

    #[test]
    fn douyin_takes_a_text_or_one_image() {
        assert_eq!(text("hi").check_for(Channel::Douyin), Ok(()));
        let one = MessageContent { text: None, attachments: vec![image()] };
        assert_eq!(one.check_for(Channel::Douyin), Ok(()));
        let card = MessageContent { text: None, attachments: vec![link("t", "https://x.example")] };
        assert_eq!(
            refusal(&card, Channel::Douyin),
            (
                "attachments[0]".to_string(),
                "a douyin private message cannot carry a link, only a text or one image".to_string()
            )
        );
        let two = MessageContent { text: None, attachments: vec![image(), image()] };
        assert_eq!(refusal(&two, Channel::Douyin).1, "a douyin private message carries one image at most");
    }

    #[test]
    fn wechat_mp_takes_exactly_one_item() {
        assert_eq!(text("hi").check_for(Channel::WechatMp), Ok(()));
        let card = MessageContent { text: None, attachments: vec![link("t", "https://x.example")] };
        assert_eq!(card.check_for(Channel::WechatMp), Ok(()));
        let by_url = MessageContent { text: None, attachments: vec![image()] };
        assert_eq!(
            refusal(&by_url, Channel::WechatMp),
            ("attachments[0].media_id".to_string(), "wechat_mp sends images by media_id only".to_string())
        );
        let both = MessageContent { text: Some("hi".to_string()), attachments: vec![link("t", "https://x.example")] };
        assert_eq!(refusal(&both, Channel::WechatMp).0, "attachments");
        let video = MessageContent { text: None, attachments: vec![Attachment::Video { media_id: "V".to_string() }] };
        assert_eq!(
            refusal(&video, Channel::WechatMp).1,
            "a wechat_mp customer-service message is exactly one text, image, link or mini-program card, not a video"
        );
    }

    #[test]
    fn required_attachment_fields_are_checked_on_every_channel() {
        let no_page = MessageContent {
            text: None,
            attachments: vec![Attachment::MiniProgram {
                title: "小店".to_string(),
                appid: "wx1".to_string(),
                page: " ".to_string(),
                pic_media_id: "M".to_string(),
            }],
        };
        assert_eq!(
            refusal(&no_page, Channel::Other),
            ("attachments[0].page".to_string(), "a mini_program needs a page".to_string())
        );
        let bare =
            MessageContent { text: None, attachments: vec![Attachment::Image { pic_url: None, media_id: None }] };
        assert_eq!(refusal(&bare, Channel::Wecom).1, "an image needs a pic_url or a media_id");
    }
}
