//! The channels (渠道) through which a tenant reaches people.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Douyin,
    Kuaishou,
    Wecom,
    WechatMp,
    MiniProgram,
    Taobao,
    Jd,
    Youzan,
    Offline,
    Web,
    App,
    Other,
}

impl Channel {
    pub const ALL: [Channel; 12] = [
        Channel::Douyin,
        Channel::Kuaishou,
        Channel::Wecom,
        Channel::WechatMp,
        Channel::MiniProgram,
        Channel::Taobao,
        Channel::Jd,
        Channel::Youzan,
        Channel::Offline,
        Channel::Web,
        Channel::App,
        Channel::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Douyin => "douyin",
            Channel::Kuaishou => "kuaishou",
            Channel::Wecom => "wecom",
            Channel::WechatMp => "wechat_mp",
            Channel::MiniProgram => "mini_program",
            Channel::Taobao => "taobao",
            Channel::Jd => "jd",
            Channel::Youzan => "youzan",
            Channel::Offline => "offline",
            Channel::Web => "web",
            Channel::App => "app",
            Channel::Other => "other",
        }
    }

    /// A dense code for compact in-memory and on-disk use.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Channel {
        Channel::ALL.get(code as usize).copied().unwrap_or(Channel::Other)
    }

    pub fn parse(text: &str) -> Option<Channel> {
        Some(match text {
            "douyin" => Channel::Douyin,
            "kuaishou" => Channel::Kuaishou,
            "wecom" => Channel::Wecom,
            "wechat_mp" => Channel::WechatMp,
            "mini_program" => Channel::MiniProgram,
            "taobao" => Channel::Taobao,
            "jd" => Channel::Jd,
            "youzan" => Channel::Youzan,
            "offline" => Channel::Offline,
            "web" => Channel::Web,
            "app" => Channel::App,
            "other" => Channel::Other,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in Channel::ALL {
            assert_eq!(Channel::from_code(c.code()), c);
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        assert_eq!(Channel::parse("myspace"), None);
    }
}
