//! Message templates (内容库): what a message says, per channel, in a small template language —
//! minijinja's syntax over a fixed vocabulary of profile variables — checked when it is saved and
//! rendered once per person when it is sent.
//!
//! A template is saved as a [`TemplateDef`] (its purpose and one [`ContentTemplate`] per channel,
//! plus a `default`). [`TemplateDef::compile`] is the save-time check: syntax, variables, fields,
//! filters and tests are checked against the vocabulary documented in docs/templates.md, and every
//! variant is rendered once against [`RenderContext::sample`] to see that its channel can deliver
//! it; each problem comes back as a [`TemplateError`] with the field and the line and column in
//! that field's source. The resulting [`CompiledTemplate`] renders without parsing again, so the
//! engine can render a campaign's million messages from one compiled copy shared across threads.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::convert::Infallible;
use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use super::content::{Attachment, MessageContent};
use crate::{Channel, FanTier, Fen, Ownership, PoolStage, ProfileId, RfmGroup};

/// Why a message is sent, which decides the rules it obeys: frequency caps and quiet hours apply
/// to marketing only; consent revocation stops everything but transactional messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// 营销: promotions, recalls, launches — what people can be tired of.
    #[default]
    Marketing,
    /// 服务: answers, reminders the person asked for (a live-stream booking, an appointment).
    Service,
    /// 交易: order, payment and delivery notices.
    Transactional,
}

impl Purpose {
    /// How a consent event's purpose is kept in its fact ([`crate::Fact::purpose`]):
    /// [`Purpose::ANY`] when it names none (it applies to every purpose on every channel), a
    /// purpose's [`Purpose::code`], or [`Purpose::OTHER`] for a purpose siyu does not send for.
    pub fn consent_code(purpose: Option<&str>) -> u8 {
        match purpose {
            None => Purpose::ANY,
            Some(text) => [Purpose::Marketing, Purpose::Service, Purpose::Transactional]
                .into_iter()
                .find(|p| p.as_str() == text)
                .map_or(Purpose::OTHER, Purpose::code),
        }
    }

    pub const ANY: u8 = 0;
    pub const OTHER: u8 = u8::MAX;

    pub fn code(self) -> u8 {
        match self {
            Purpose::Marketing => 1,
            Purpose::Service => 2,
            Purpose::Transactional => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Marketing => "marketing",
            Purpose::Service => "service",
            Purpose::Transactional => "transactional",
        }
    }
}

/// A saved message template: its purpose and its variants, keyed by `default` or a channel name
/// (`wecom`, `douyin`, `wechat_mp`, ...). A send on a channel uses that channel's variant, else
/// the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDef {
    #[serde(default)]
    pub purpose: Purpose,
    /// The campaign variables the template expects (`coupon_code` for `vars.coupon_code`). When
    /// given, a `vars.NAME` not listed is refused even while no campaign is known; empty means
    /// the template does not say, and only the campaign's names are checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<String>,
    pub variants: BTreeMap<String, ContentTemplate>,
}

/// The source of one variant: the shape of a [`MessageContent`], where every string (the text,
/// titles, urls, descriptions, pages, media ids) is template source. A string without `{{`,
/// `{%` or `{#` is sent as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// One problem found when a template is saved.
///
/// `line` and `column` are 1-based within the source of `field` (the column counts characters,
/// not bytes); both are 0 when the problem is not at a place in a source (an empty variant, an
/// unknown channel, content the channel cannot deliver).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}:{line}:{column}: {message}")]
pub struct TemplateError {
    /// `template_syntax`, `unknown_variable`, `unknown_field`, `unknown_filter`, `unknown_test`,
    /// `render_failed`, `empty_variant`, `unsupported_content`, `unknown_channel` or `no_variant`.
    pub code: &'static str,
    /// The variant's key (`default`, `wecom`, ...); empty for the template as a whole.
    pub variant: String,
    /// The path of the field, e.g. `variants.wecom.text` or `variants.default.attachments[0].title`.
    pub field: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// Why one message could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RenderError {
    /// `no_variant` (neither the channel's variant nor a default), `render_failed` (the engine
    /// failed on this person's values) or `unsupported_content` (the channel cannot deliver
    /// what came out, e.g. a text over WeCom's 4000 bytes).
    pub code: &'static str,
    pub variant: String,
    pub field: String,
    pub message: String,
}

/// What a template can read about the person a message goes to: the vocabulary of
/// docs/templates.md, filled by the engine from the profile (and the triggering event, the
/// campaign and the staff member, when there are).
///
/// A `None` (or an empty text) renders as nothing and counts as missing, so `default("亲")`
/// replaces it.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderContext {
    pub profile_id: ProfileId,
    /// `traits.name`, the name the person gave.
    pub name: Option<String>,
    /// `tier` renders as `true_fan`; `tier_label` is derived from it (真爱粉).
    pub tier: FanTier,
    pub pool_stage: PoolStage,
    pub ownership: Ownership,
    pub rfm_group: Option<RfmGroup>,
    pub affinity: f64,
    /// Net paid orders (paid minus refunded).
    pub orders: u32,
    /// Renders in yuan with two decimals (`199.00`).
    pub net_revenue: Fen,
    /// Tenant-local date-time text, formatted by the engine (`2026-03-08 20:15`).
    pub last_order_at: Option<String>,
    pub last_order_amount: Option<Fen>,
    /// Tenant-local date-time text.
    pub first_seen_at: String,
    /// Tenant-local date-time text.
    pub last_seen_at: String,
    pub tags: Vec<String>,
    /// The profile's traits; any key can be read below `traits`.
    pub traits: serde_json::Map<String, serde_json::Value>,
    pub event: Option<EventContext>,
    pub campaign: Option<CampaignContext>,
    /// The campaign's own variables (`vars.coupon_code`); only declared names pass the save check.
    pub vars: BTreeMap<String, String>,
    pub staff: Option<StaffContext>,
}

/// The event that triggered the message (a journey step, an automation).
#[derive(Debug, Clone, PartialEq)]
pub struct EventContext {
    /// `event.type`: the event type's name (`order_paid`, `live_watch`, a custom name).
    pub kind: String,
    pub channel: Channel,
    pub account: String,
    /// Tenant-local date-time text.
    pub timestamp: String,
    /// Renders in yuan (`199.00`).
    pub amount: Option<Fen>,
    /// Any key can be read below `event.properties`.
    pub properties: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignContext {
    pub id: String,
    pub name: String,
}

/// The staff member (导购 / 客服) the message goes out as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffContext {
    pub name: String,
    pub userid: String,
}

/// A checked template, ready to render. Cloning is cheap (one `Arc`); it is `Send + Sync`.
#[derive(Clone)]
pub struct CompiledTemplate {
    inner: Arc<Compiled>,
}

impl TemplateDef {
    /// The save-time check: every problem of every variant, or the compiled template.
    ///
    /// `declared_vars` are the names the campaign supplies under `vars`; `["*"]` accepts any name,
    /// for saving a template before the campaigns that will use it exist (each campaign then
    /// compiles it with its own names, which catches a variable it does not supply).
    pub fn compile(&self, declared_vars: &[String]) -> Result<CompiledTemplate, Vec<TemplateError>> {
        let vars = VarRules { template: &self.vars, campaign: declared_vars };
        let mut env = environment();
        // Debug mode gives runtime errors their source range; only the sample renders need it.
        env.set_debug(true);
        let mut errors = Vec::new();
        if self.variants.is_empty() {
            errors.push(TemplateError::whole(
                "no_variant",
                "",
                "variants",
                "a template needs a default variant or a variant for a channel",
            ));
        }
        let mut variants = Vec::new();
        for (key, content) in &self.variants {
            let channel = match key.as_str() {
                "default" => None,
                name => match Channel::parse(name) {
                    Some(channel) => Some(channel),
                    None => {
                        errors.push(TemplateError::whole(
                            "unknown_channel",
                            key,
                            &format!("variants.{key}"),
                            &format!("unknown variant {key:?}: a variant is \"default\" or a channel ({})", channels()),
                        ));
                        continue;
                    }
                },
            };
            match compile_variant(&mut env, key, content, &vars) {
                Ok(variant) => variants.push((channel, variant)),
                Err(mut problems) => errors.append(&mut problems),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // Every variable the template reads gets a placeholder, so a link whose url is
        // `{{ vars.url }}` is not refused as empty for want of a campaign.
        let read: BTreeSet<&str> = variants.iter().flat_map(|(_, v)| v.vars.iter().map(String::as_str)).collect();
        let placeholders = read.iter().copied().chain(self.vars.iter().map(String::as_str));
        let sample = RenderContext::sample_with(placeholders.chain(declared_vars.iter().map(String::as_str)));
        for (channel, variant) in &variants {
            let checked = channel.unwrap_or(Channel::Other);
            if let Err(failure) = render_variant(&env, variant, &sample, checked) {
                errors.push(failure.at_save());
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        env.set_debug(false);
        let vars = read.into_iter().map(str::to_string).collect();
        let inner = Compiled { purpose: self.purpose, env, variants, sample, vars };
        Ok(CompiledTemplate { inner: Arc::new(inner) })
    }
}

impl CompiledTemplate {
    pub fn purpose(&self) -> Purpose {
        self.inner.purpose
    }

    /// The message for one person on one channel: the channel's variant, else the default,
    /// rendered and checked against what the channel can deliver.
    pub fn render(&self, channel: Channel, ctx: &RenderContext) -> Result<MessageContent, RenderError> {
        let variant = self.variant_for(channel)?;
        render_variant(&self.inner.env, variant, ctx, channel).map_err(Failure::at_send)
    }

    /// The message as [`RenderContext::sample`] would receive it (each `vars.NAME` shows as
    /// `[NAME]`): the console's preview, and a campaign's check of the channels it sends on,
    /// since a default variant is only checked as a plain message when the template is saved.
    pub fn preview(&self, channel: Channel) -> Result<MessageContent, RenderError> {
        self.render(channel, &self.inner.sample)
    }

    /// The campaign variables the template reads (`coupon_code` for `vars.coupon_code`), sorted:
    /// what a campaign using it has to supply.
    pub fn vars(&self) -> &[String] {
        &self.inner.vars
    }

    /// Whether any variant reads this top-level variable (`traits`, `event`, `tags`, ...), so a
    /// caller can skip filling what no template reads.
    pub fn reads(&self, variable: &str) -> bool {
        self.inner.variants.iter().any(|(_, v)| v.roots.iter().any(|root| root.name() == variable))
    }

    fn variant_for(&self, channel: Channel) -> Result<&Variant, RenderError> {
        let variants = &self.inner.variants;
        let found = variants
            .iter()
            .find(|(c, _)| *c == Some(channel))
            .or_else(|| variants.iter().find(|(c, _)| c.is_none()))
            .map(|(_, v)| v);
        found.ok_or_else(|| RenderError {
            code: "no_variant",
            variant: String::new(),
            field: "variants".to_string(),
            message: format!("the template has no {channel} variant and no default"),
        })
    }
}

impl std::fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.inner.variants.iter().map(|(_, v)| v.key.as_str()).collect();
        f.debug_struct("CompiledTemplate").field("purpose", &self.inner.purpose).field("variants", &keys).finish()
    }
}

impl RenderContext {
    /// A made-up person with every variable filled, for save-time checks and previews.
    pub fn sample() -> RenderContext {
        let traits = serde_json::json!({"name": "小雨", "city": "杭州", "gender": "female"});
        RenderContext {
            profile_id: 10001,
            name: Some("小雨".to_string()),
            tier: FanTier::TrueFan,
            pool_stage: PoolStage::MainBase,
            ownership: Ownership::L3,
            rfm_group: Some(RfmGroup::ImportantValue),
            affinity: 86.5,
            orders: 3,
            net_revenue: Fen(59_700),
            last_order_at: Some("2026-03-08 20:15".to_string()),
            last_order_amount: Some(Fen(19_900)),
            first_seen_at: "2025-11-11 10:02".to_string(),
            last_seen_at: "2026-03-20 21:40".to_string(),
            tags: vec!["高复购".to_string(), "直播常客".to_string()],
            traits: traits.as_object().cloned().unwrap_or_default(),
            event: Some(EventContext {
                kind: "order_paid".to_string(),
                channel: Channel::Douyin,
                account: "douyin-main".to_string(),
                timestamp: "2026-03-08 20:15".to_string(),
                amount: Some(Fen(19_900)),
                properties: serde_json::Map::from_iter([
                    ("sku".to_string(), serde_json::Value::from("SKU-001")),
                    ("title".to_string(), serde_json::Value::from("玻尿酸精华")),
                ]),
            }),
            campaign: Some(CampaignContext { id: "sample".to_string(), name: "示例活动".to_string() }),
            vars: BTreeMap::new(),
            staff: Some(StaffContext { name: "王店长".to_string(), userid: "wangdz".to_string() }),
        }
    }

    fn sample_with<'a>(vars: impl Iterator<Item = &'a str>) -> RenderContext {
        let mut ctx = RenderContext::sample();
        ctx.vars = vars.filter(|name| *name != ANY_VAR).map(|name| (name.to_string(), format!("[{name}]"))).collect();
        ctx
    }
}

/// In `declared_vars`: any campaign variable is accepted.
const ANY_VAR: &str = "*";

/// Fuel per rendered field: bounds the time and memory one template can take (a message uses a
/// few hundred), so a runaway loop fails one send instead of stalling a campaign.
const FUEL: u64 = 100_000;

/// The top-level names minijinja provides beside the vocabulary (`debug` is removed: it would
/// print the whole context into a customer's message).
const GLOBALS: &[&str] = &["range", "dict", "namespace"];

/// The filters named in docs/templates.md, offered as suggestions for a misspelt one. Whether a
/// filter exists is asked of the environment itself.
const SUGGESTED_FILTERS: &[&str] = &[
    "default",
    "upper",
    "lower",
    "title",
    "capitalize",
    "trim",
    "truncate",
    "replace",
    "length",
    "join",
    "first",
    "last",
    "round",
    "int",
    "float",
    "string",
    "format",
    "sort",
    "unique",
    "abs",
    "min",
    "max",
    "sum",
];
const SUGGESTED_TESTS: &[&str] =
    &["defined", "undefined", "none", "number", "string", "in", "eq", "ne", "lt", "le", "gt", "ge", "odd", "even"];

struct Compiled {
    purpose: Purpose,
    env: Environment<'static>,
    /// In key order; `None` is the default.
    variants: Vec<(Option<Channel>, Variant)>,
    sample: RenderContext,
    vars: Vec<String>,
}

/// Who says which `vars.NAME` exist: the template's own list (when it has one) and the campaign.
struct VarRules<'a> {
    template: &'a [String],
    campaign: &'a [String],
}

struct Variant {
    key: String,
    content: ContentTemplate,
    /// One per string of `content`, in the order `visit_strings` visits them.
    pieces: Vec<Piece>,
    /// The top-level variables its templates read: only these are built for a render.
    roots: Vec<Root>,
    /// The names it reads under `vars`.
    vars: BTreeSet<String>,
}

enum Piece {
    /// No template syntax: the source is the output.
    Literal,
    /// A template in the environment under this name (the field's path).
    Template(String),
}

/// A failure while rendering one variant, with enough to report it at save time or at a send.
struct Failure {
    code: &'static str,
    variant: String,
    field: String,
    line: u32,
    column: u32,
    message: String,
}

impl Failure {
    fn at_save(self) -> TemplateError {
        TemplateError {
            code: self.code,
            variant: self.variant,
            field: self.field,
            line: self.line,
            column: self.column,
            message: self.message,
        }
    }

    fn at_send(self) -> RenderError {
        let message = match self.line {
            0 => self.message,
            line => format!("line {line}, column {}: {}", self.column, self.message),
        };
        RenderError { code: self.code, variant: self.variant, field: self.field, message }
    }
}

impl TemplateError {
    fn whole(code: &'static str, variant: &str, field: &str, message: &str) -> TemplateError {
        TemplateError {
            code,
            variant: variant.to_string(),
            field: field.to_string(),
            line: 0,
            column: 0,
            message: message.to_string(),
        }
    }

    fn at(
        code: &'static str,
        variant: &str,
        field: &str,
        source: &str,
        offset: usize,
        message: String,
    ) -> TemplateError {
        let (line, column) = position(source, offset);
        TemplateError { code, variant: variant.to_string(), field: field.to_string(), line, column, message }
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Missing values (and attributes of missing values) print as nothing rather than failing a
    // send; the save-time check is what catches misspelt names.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_formatter(|out, state, value| {
        if value.is_none() || value.is_undefined() {
            return Ok(());
        }
        minijinja::escape_formatter(out, state, value)
    });
    // A `{% if %}` on a line of its own leaves no blank line behind.
    let syntax = SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build();
    env.set_syntax(syntax.expect("the default delimiters are valid"));
    env.set_fuel(Some(FUEL));
    env.remove_global("debug");
    env.add_filter("truncate", truncate);
    env
}

/// `truncate(n, end="…")`: at most `n` characters, `end` included, counted in characters (a
/// Chinese text has no spaces to cut at).
fn truncate(value: String, length: Option<usize>, end: Option<String>) -> String {
    let length = length.unwrap_or(255);
    if value.chars().count() <= length {
        return value;
    }
    let end = end.unwrap_or_else(|| "…".to_string());
    let keep = length.saturating_sub(end.chars().count());
    let mut out: String = value.chars().take(keep).collect();
    out.push_str(&end);
    out
}

fn channels() -> String {
    Channel::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
}

fn has_syntax(source: &str) -> bool {
    source.contains("{{") || source.contains("{%") || source.contains("{#")
}

fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

/// Passes every string of an attachment through `f` (with its field name) and rebuilds it; an
/// optional field that comes out blank is dropped. The one place that knows the order of an
/// attachment's strings, so compiling and rendering cannot disagree about it.
fn visit_strings<E>(
    attachment: &Attachment,
    f: &mut impl FnMut(&'static str, &str) -> Result<String, E>,
) -> Result<Attachment, E> {
    fn optional<E>(
        field: &'static str,
        value: &Option<String>,
        f: &mut impl FnMut(&'static str, &str) -> Result<String, E>,
    ) -> Result<Option<String>, E> {
        match value {
            Some(source) => Ok(Some(f(field, source)?).filter(|out| !is_blank(out))),
            None => Ok(None),
        }
    }
    Ok(match attachment {
        Attachment::Image { pic_url, media_id } => Attachment::Image {
            pic_url: optional("pic_url", pic_url, f)?,
            media_id: optional("media_id", media_id, f)?,
        },
        Attachment::Link { title, url, pic_url, desc } => Attachment::Link {
            title: f("title", title)?,
            url: f("url", url)?,
            pic_url: optional("pic_url", pic_url, f)?,
            desc: optional("desc", desc, f)?,
        },
        Attachment::MiniProgram { title, appid, page, pic_media_id } => Attachment::MiniProgram {
            title: f("title", title)?,
            appid: f("appid", appid)?,
            page: f("page", page)?,
            pic_media_id: f("pic_media_id", pic_media_id)?,
        },
        Attachment::Video { media_id } => Attachment::Video { media_id: f("media_id", media_id)? },
        Attachment::File { media_id } => Attachment::File { media_id: f("media_id", media_id)? },
    })
}

fn compile_variant(
    env: &mut Environment<'static>,
    key: &str,
    content: &ContentTemplate,
    vars: &VarRules<'_>,
) -> Result<Variant, Vec<TemplateError>> {
    let blank_text = content.text.as_deref().is_none_or(is_blank);
    if blank_text && content.attachments.is_empty() {
        let message = "the variant is empty: it needs a text or an attachment";
        return Err(vec![TemplateError::whole("empty_variant", key, &format!("variants.{key}"), message)]);
    }
    let mut pieces = Vec::new();
    let mut roots = Vec::new();
    let mut read_vars = BTreeSet::new();
    let mut errors = Vec::new();
    let mut visit = |field: String, source: &str| {
        let field = format!("variants.{key}.{field}");
        if !has_syntax(source) {
            pieces.push(Piece::Literal);
            return;
        }
        match check_source(env, key, &field, source, vars) {
            Ok(read) => {
                for root in read.roots {
                    if !roots.contains(&root) {
                        roots.push(root);
                    }
                }
                read_vars.extend(read.vars);
                pieces.push(Piece::Template(field));
            }
            Err(mut problems) => errors.append(&mut problems),
        }
    };
    if let Some(text) = &content.text {
        visit("text".to_string(), text);
    }
    for (i, attachment) in content.attachments.iter().enumerate() {
        let _ = visit_strings(attachment, &mut |name, source| {
            visit(format!("attachments[{i}].{name}"), source);
            Ok::<_, Infallible>(String::new())
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Variant { key: key.to_string(), content: content.clone(), pieces, roots, vars: read_vars })
}

/// What one field's template reads.
struct Reads {
    roots: Vec<Root>,
    vars: Vec<String>,
}

/// Adds one field's template to the environment and checks it: syntax, then every name it reads,
/// filters and tests.
fn check_source(
    env: &mut Environment<'static>,
    key: &str,
    field: &str,
    source: &str,
    vars: &VarRules<'_>,
) -> Result<Reads, Vec<TemplateError>> {
    if let Err(e) = env.add_template_owned(field.to_string(), source.to_string()) {
        let offset = error_offset(source, &e);
        return Err(vec![TemplateError::at("template_syntax", key, field, source, offset, error_message(&e))]);
    }
    let Ok(template) = env.get_template(field) else {
        return Ok(Reads { roots: Vec::new(), vars: Vec::new() });
    };
    let blocks = scan(source);
    let mut errors = Vec::new();
    let mut paths: Vec<String> = template.undeclared_variables(true).into_iter().collect();
    paths.sort();
    let mut unknown_roots = HashSet::new();
    for path in &paths {
        let segments: Vec<&str> = path.split('.').collect();
        let Err(problem) = check_path(&segments, vars) else {
            continue;
        };
        if problem.code == "unknown_variable" && !unknown_roots.insert(segments[0]) {
            continue;
        }
        let offset = locate(&blocks, &segments[..=problem.segment]).unwrap_or(0);
        errors.push(TemplateError::at(problem.code, key, field, source, offset, problem.message));
    }
    for name in names_called(&blocks) {
        let (test, suggestions) = match name.kind {
            NameKind::Filter => ("filter", SUGGESTED_FILTERS),
            NameKind::Test => ("test", SUGGESTED_TESTS),
        };
        if exists(env, test, &name.name) {
            continue;
        }
        let code = if test == "filter" { "unknown_filter" } else { "unknown_test" };
        let message = format!("unknown {test} {:?}{}", name.name, suggest(&name.name, suggestions.iter().copied()));
        errors.push(TemplateError::at(code, key, field, source, name.offset, message));
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| (e.line, e.column));
        return Err(errors);
    }
    let read = template.undeclared_variables(false);
    let roots = Root::ALL.iter().copied().filter(|root| read.contains(root.name())).collect();
    let vars =
        paths.iter().filter_map(|p| p.strip_prefix("vars.")).map(|p| p.split('.').next().unwrap_or(p).to_string());
    Ok(Reads { roots, vars: vars.collect() })
}

/// Whether the environment has a filter (or test) of this name, asked through minijinja's own
/// `is filter` / `is test` tests so the answer follows the engine's real registry.
fn exists(env: &Environment<'static>, kind: &str, name: &str) -> bool {
    let source = if kind == "filter" { "name is filter" } else { "name is test" };
    let Ok(expression) = env.compile_expression(source) else {
        return false;
    };
    expression.eval(Value::from_pairs([("name", name)])).is_ok_and(|v| v.is_true())
}

fn error_offset(source: &str, e: &minijinja::Error) -> usize {
    if let Some(range) = e.range() {
        return range.start;
    }
    let line = e.line().unwrap_or(1);
    // Start of that line: the error has no column.
    source.split_inclusive('\n').take(line.saturating_sub(1)).map(str::len).sum()
}

fn error_message(e: &minijinja::Error) -> String {
    let Some(detail) = e.detail() else {
        return e.kind().to_string();
    };
    // minijinja's words for a missing `{% endif %}` do not say what is missing.
    let missing_end = detail.ends_with("unexpected end of input, expected end of block");
    let hint = if missing_end { " (is an {% endif %} or {% endfor %} missing?)" } else { "" };
    format!("{}: {detail}{hint}", e.kind())
}

/// 1-based line and column (in characters) of a byte offset.
fn position(source: &str, offset: usize) -> (u32, u32) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let column = before[line_start..].chars().count() + 1;
    (u32::try_from(line).unwrap_or(u32::MAX), u32::try_from(column).unwrap_or(u32::MAX))
}

fn render_variant(
    env: &Environment<'static>,
    variant: &Variant,
    ctx: &RenderContext,
    channel: Channel,
) -> Result<MessageContent, Failure> {
    let root = Value::from_pairs(variant.roots.iter().map(|root| (root.name(), root.value(ctx))));
    let mut pieces = variant.pieces.iter();
    let mut render = |_: &'static str, source: &str| -> Result<String, Failure> {
        let Some(Piece::Template(name)) = pieces.next() else {
            return Ok(source.to_string());
        };
        let rendered = env.get_template(name).and_then(|template| template.render(&root));
        rendered.map_err(|e| {
            let (line, column) = position(source, error_offset(source, &e));
            Failure {
                code: "render_failed",
                variant: variant.key.clone(),
                field: name.clone(),
                line,
                column,
                message: error_message(&e),
            }
        })
    };
    let text = match &variant.content.text {
        Some(source) => Some(render("text", source)?).filter(|text| !is_blank(text)),
        None => None,
    };
    let attachments =
        variant.content.attachments.iter().map(|a| visit_strings(a, &mut render)).collect::<Result<Vec<_>, _>>()?;
    let content = MessageContent { text, attachments };
    content.check_for(channel).map_err(|e| Failure {
        code: "unsupported_content",
        variant: variant.key.clone(),
        field: match e.field.as_str() {
            "" => format!("variants.{}", variant.key),
            field => format!("variants.{}.{field}", variant.key),
        },
        line: 0,
        column: 0,
        message: e.message,
    })?;
    Ok(content)
}

// ---- the vocabulary ----

/// A top-level variable of the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Name,
    ProfileId,
    Tier,
    TierLabel,
    PoolStage,
    Ownership,
    RfmGroup,
    Affinity,
    Orders,
    NetRevenue,
    LastOrderAt,
    LastOrderAmount,
    FirstSeenAt,
    LastSeenAt,
    Tags,
    Traits,
    Event,
    Campaign,
    Vars,
    Staff,
}

/// What may follow a variable's name after a dot.
enum Shape {
    /// Nothing: a text, a number or a list.
    Value,
    /// Any key (traits, event properties).
    Open,
    /// These fields only.
    Fields(&'static [(&'static str, Shape)]),
    /// The names the campaign declares.
    Declared,
}

const EVENT_FIELDS: &[(&str, Shape)] = &[
    ("type", Shape::Value),
    ("channel", Shape::Value),
    ("account", Shape::Value),
    ("timestamp", Shape::Value),
    ("amount", Shape::Value),
    ("properties", Shape::Open),
];
const CAMPAIGN_FIELDS: &[(&str, Shape)] = &[("id", Shape::Value), ("name", Shape::Value)];
const STAFF_FIELDS: &[(&str, Shape)] = &[("name", Shape::Value), ("userid", Shape::Value)];

impl Root {
    const ALL: [Root; 20] = [
        Root::Name,
        Root::ProfileId,
        Root::Tier,
        Root::TierLabel,
        Root::PoolStage,
        Root::Ownership,
        Root::RfmGroup,
        Root::Affinity,
        Root::Orders,
        Root::NetRevenue,
        Root::LastOrderAt,
        Root::LastOrderAmount,
        Root::FirstSeenAt,
        Root::LastSeenAt,
        Root::Tags,
        Root::Traits,
        Root::Event,
        Root::Campaign,
        Root::Vars,
        Root::Staff,
    ];

    fn name(self) -> &'static str {
        match self {
            Root::Name => "name",
            Root::ProfileId => "profile_id",
            Root::Tier => "tier",
            Root::TierLabel => "tier_label",
            Root::PoolStage => "pool_stage",
            Root::Ownership => "ownership",
            Root::RfmGroup => "rfm_group",
            Root::Affinity => "affinity",
            Root::Orders => "orders",
            Root::NetRevenue => "net_revenue",
            Root::LastOrderAt => "last_order_at",
            Root::LastOrderAmount => "last_order_amount",
            Root::FirstSeenAt => "first_seen_at",
            Root::LastSeenAt => "last_seen_at",
            Root::Tags => "tags",
            Root::Traits => "traits",
            Root::Event => "event",
            Root::Campaign => "campaign",
            Root::Vars => "vars",
            Root::Staff => "staff",
        }
    }

    fn shape(self) -> &'static Shape {
        match self {
            Root::Traits => &Shape::Open,
            Root::Event => &Shape::Fields(EVENT_FIELDS),
            Root::Campaign => &Shape::Fields(CAMPAIGN_FIELDS),
            Root::Staff => &Shape::Fields(STAFF_FIELDS),
            Root::Vars => &Shape::Declared,
            _ => &Shape::Value,
        }
    }

    fn value(self, ctx: &RenderContext) -> Value {
        match self {
            Root::Name => text(ctx.name.as_deref()),
            Root::ProfileId => Value::from(ctx.profile_id),
            Root::Tier => Value::from(ctx.tier.as_str()),
            Root::TierLabel => Value::from(tier_label(ctx.tier)),
            Root::PoolStage => Value::from(ctx.pool_stage.as_str()),
            Root::Ownership => Value::from(ctx.ownership.as_str()),
            Root::RfmGroup => text(ctx.rfm_group.map(RfmGroup::as_str)),
            Root::Affinity => Value::from(ctx.affinity),
            Root::Orders => Value::from(ctx.orders),
            Root::NetRevenue => Value::from(ctx.net_revenue.to_string()),
            Root::LastOrderAt => text(ctx.last_order_at.as_deref()),
            Root::LastOrderAmount => ctx.last_order_amount.map_or(Value::UNDEFINED, |fen| Value::from(fen.to_string())),
            Root::FirstSeenAt => text(Some(ctx.first_seen_at.as_str())),
            Root::LastSeenAt => text(Some(ctx.last_seen_at.as_str())),
            Root::Tags => ctx.tags.iter().map(String::as_str).collect(),
            Root::Traits => json_map(&ctx.traits),
            Root::Event => ctx.event.as_ref().map_or(Value::UNDEFINED, |event| {
                Value::from_pairs([
                    ("type", Value::from(event.kind.as_str())),
                    ("channel", Value::from(event.channel.as_str())),
                    ("account", text(Some(event.account.as_str()))),
                    ("timestamp", text(Some(event.timestamp.as_str()))),
                    ("amount", event.amount.map_or(Value::UNDEFINED, |fen| Value::from(fen.to_string()))),
                    ("properties", json_map(&event.properties)),
                ])
            }),
            Root::Campaign => ctx.campaign.as_ref().map_or(Value::UNDEFINED, |c| {
                Value::from_pairs([("id", text(Some(c.id.as_str()))), ("name", text(Some(c.name.as_str())))])
            }),
            Root::Vars => Value::from_pairs(ctx.vars.iter().map(|(k, v)| (k.as_str(), text(Some(v.as_str()))))),
            Root::Staff => ctx.staff.as_ref().map_or(Value::UNDEFINED, |s| {
                Value::from_pairs([("name", text(Some(s.name.as_str()))), ("userid", text(Some(s.userid.as_str())))])
            }),
        }
    }
}

/// The label a customer may see: "未分层" is an operator's word, so no tier shows as a dash.
fn tier_label(tier: FanTier) -> &'static str {
    match tier {
        FanTier::None => "—",
        other => other.label_zh(),
    }
}

/// A missing or empty text is undefined, so `default(...)` replaces it and it prints as nothing.
fn text(value: Option<&str>) -> Value {
    match value {
        Some(v) if !v.is_empty() => Value::from(v),
        _ => Value::UNDEFINED,
    }
}

fn json_map(map: &serde_json::Map<String, serde_json::Value>) -> Value {
    Value::from_pairs(map.iter().map(|(k, v)| (k.as_str(), json_value(v))))
}

/// JSON `null` counts as missing, like an absent key.
fn json_value(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::UNDEFINED,
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            (None, None) => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => text(Some(s.as_str())),
        serde_json::Value::Array(items) => items.iter().map(json_value).collect(),
        serde_json::Value::Object(map) => json_map(map),
    }
}

struct PathProblem {
    code: &'static str,
    /// The index of the segment at fault.
    segment: usize,
    message: String,
}

/// Checks a dotted name a template reads (`event.amount`, `vars.coupon_code`) against the
/// vocabulary.
fn check_path(segments: &[&str], vars: &VarRules<'_>) -> Result<(), PathProblem> {
    let first = segments[0];
    if GLOBALS.contains(&first) {
        return Ok(());
    }
    let Some(root) = Root::ALL.iter().find(|r| r.name() == first) else {
        let names = Root::ALL.iter().map(|r| r.name());
        let hint = match suggest(first, names.clone()) {
            s if s.is_empty() => format!(" (variables: {})", names.collect::<Vec<_>>().join(", ")),
            s => s,
        };
        return Err(PathProblem {
            code: "unknown_variable",
            segment: 0,
            message: format!("unknown variable {first:?}{hint}"),
        });
    };
    let mut shape = root.shape();
    for (i, segment) in segments.iter().enumerate().skip(1) {
        let parent = segments[..i].join(".");
        let unknown = |message: String| PathProblem { code: "unknown_field", segment: i, message };
        match shape {
            Shape::Open => return Ok(()),
            Shape::Value => {
                return Err(unknown(format!("{parent} has no fields, so {parent}.{segment} does not exist")))
            }
            Shape::Fields(fields) => match fields.iter().find(|(name, _)| name == segment) {
                Some((_, inner)) => shape = inner,
                None => {
                    let names = fields.iter().map(|(name, _)| *name);
                    let hint = match suggest(segment, names.clone()) {
                        s if s.is_empty() => format!(" (fields: {})", names.collect::<Vec<_>>().join(", ")),
                        s => s,
                    };
                    return Err(unknown(format!("{parent} has no field {segment:?}{hint}")));
                }
            },
            Shape::Declared => {
                let listed = |names: &[String]| names.iter().any(|v| v == segment || v == ANY_VAR);
                if !vars.template.is_empty() && !listed(vars.template) {
                    let message =
                        format!("vars.{segment} is not in the template's vars ({})", vars.template.join(", "));
                    return Err(unknown(message));
                }
                if !listed(vars.campaign) {
                    let declared = match vars.campaign {
                        [] => "it declares none".to_string(),
                        names => format!("declared: {}", names.join(", ")),
                    };
                    return Err(unknown(format!("vars.{segment} is not declared on the campaign ({declared})")));
                }
                shape = &Shape::Value;
            }
        }
    }
    Ok(())
}

/// `, did you mean "name"` for the closest candidate within two edits, else nothing.
fn suggest<'a>(wrong: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let best = candidates.map(|c| (edit_distance(wrong, c), c)).filter(|(d, _)| *d <= 2).min_by_key(|(d, _)| *d);
    match best {
        Some((_, name)) if name != wrong => format!(", did you mean {name:?}"),
        _ => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

// ---- locating names in a source ----
//
// minijinja tells which names a template reads but not where; this scanner finds the code inside
// `{{ }}` and `{% %}` (skipping comments, strings and raw blocks) so an error can point at the
// name. It runs only on sources minijinja has parsed, so it can stay small.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Ident(&'a str),
    Dot,
    Pipe,
    /// A single `=` (a keyword argument or an assignment), not `==`.
    Assign,
    Other,
}

struct Block<'a> {
    statement: bool,
    /// Tokens with their byte offsets in the source.
    toks: Vec<(Tok<'a>, usize)>,
}

enum NameKind {
    Filter,
    Test,
}

struct CalledName {
    kind: NameKind,
    name: String,
    offset: usize,
}

fn scan(source: &str) -> Vec<Block<'_>> {
    let bytes = source.as_bytes();
    let mut blocks = Vec::new();
    let mut i = 0;
    while let Some(open) = find_open(bytes, i) {
        match bytes[open + 1] {
            b'#' => match find(bytes, open + 2, b"#}") {
                Some(end) => i = end + 2,
                None => break,
            },
            kind => {
                let statement = kind == b'%';
                let (toks, end) = tokenize(source, open + 2, statement);
                i = end;
                if statement && matches!(toks.first(), Some((Tok::Ident("raw"), _))) {
                    i = skip_raw(source, i);
                    continue;
                }
                blocks.push(Block { statement, toks });
            }
        }
    }
    blocks
}

fn find_open(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(1)).find(|&k| bytes[k] == b'{' && matches!(bytes[k + 1], b'{' | b'%' | b'#'))
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

fn tokenize(source: &str, start: usize, statement: bool) -> (Vec<(Tok<'_>, usize)>, usize) {
    let b = source.as_bytes();
    let close: &[u8] = if statement { b"%}" } else { b"}}" };
    let mut toks = Vec::new();
    let mut k = start;
    if matches!(b.get(k), Some(b'-' | b'+')) {
        k += 1;
    }
    while k < b.len() {
        let c = b[k];
        if c.is_ascii_whitespace() {
            k += 1;
            continue;
        }
        if b[k..].starts_with(close) {
            return (toks, k + 2);
        }
        if matches!(c, b'-' | b'+') && b[k + 1..].starts_with(close) {
            return (toks, k + 3);
        }
        let at = k;
        let tok = match c {
            b'"' | b'\'' => {
                k += 1;
                while k < b.len() && b[k] != c {
                    k += if b[k] == b'\\' { 2 } else { 1 };
                }
                k += 1;
                Tok::Other
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'_' => {
                while k < b.len() && (b[k].is_ascii_alphanumeric() || b[k] == b'_') {
                    k += 1;
                }
                Tok::Ident(&source[at..k])
            }
            b'0'..=b'9' => {
                while k < b.len()
                    && (b[k].is_ascii_alphanumeric()
                        || b[k] == b'_'
                        || (b[k] == b'.' && b.get(k + 1).is_some_and(u8::is_ascii_digit)))
                {
                    k += 1;
                }
                Tok::Other
            }
            b'.' => {
                k += 1;
                Tok::Dot
            }
            b'|' => {
                k += 1;
                Tok::Pipe
            }
            b'=' if b.get(k + 1) == Some(&b'=') => {
                k += 2;
                Tok::Other
            }
            b'=' => {
                k += 1;
                Tok::Assign
            }
            _ => {
                k += source[k..].chars().next().map_or(1, char::len_utf8);
                Tok::Other
            }
        };
        toks.push((tok, at));
    }
    (toks, b.len())
}

/// The position after the `{% endraw %}` that closes a raw block.
fn skip_raw(source: &str, from: usize) -> usize {
    let bytes = source.as_bytes();
    let mut i = from;
    while let Some(open) = find(bytes, i, b"{%") {
        let rest = source[open + 2..].trim_start_matches(['-', '+']).trim_start();
        if rest.starts_with("endraw") {
            return find(bytes, open, b"%}").map_or(bytes.len(), |end| end + 2);
        }
        i = open + 2;
    }
    bytes.len()
}

/// Whether the identifier at `i` reads a variable (rather than naming an attribute, a filter, a
/// test, a keyword argument or a statement).
fn reads_variable(block: &Block<'_>, i: usize) -> bool {
    let tok = |k: usize| block.toks.get(k).map(|(t, _)| *t);
    if block.statement && (i == 0 || (i == 1 && tok(0) == Some(Tok::Ident("filter")))) {
        return false;
    }
    if tok(i + 1) == Some(Tok::Assign) {
        return false;
    }
    match i.checked_sub(1).and_then(tok) {
        Some(Tok::Dot | Tok::Pipe | Tok::Ident("is")) => false,
        Some(Tok::Ident("not")) => i.checked_sub(2).and_then(tok) != Some(Tok::Ident("is")),
        _ => true,
    }
}

/// The offset of the last of `segments` at the first place the template reads them as a dotted
/// name (`event . amout` included).
fn locate(blocks: &[Block<'_>], segments: &[&str]) -> Option<usize> {
    for block in blocks {
        'start: for start in 0..block.toks.len() {
            if block.toks[start].0 != Tok::Ident(segments[0]) || !reads_variable(block, start) {
                continue;
            }
            let mut k = start;
            for segment in &segments[1..] {
                let dot = block.toks.get(k + 1).map(|(t, _)| *t);
                let name = block.toks.get(k + 2).map(|(t, _)| *t);
                if dot != Some(Tok::Dot) || name != Some(Tok::Ident(segment)) {
                    continue 'start;
                }
                k += 2;
            }
            return Some(block.toks[k].1);
        }
    }
    None
}

/// Every filter (`| name`, `{% filter name %}`) and test (`is name`, `is not name`) a source names.
fn names_called(blocks: &[Block<'_>]) -> Vec<CalledName> {
    let mut names = Vec::new();
    for block in blocks {
        let toks = &block.toks;
        for (i, (tok, _)) in toks.iter().enumerate() {
            let start = match tok {
                Tok::Pipe => Some((NameKind::Filter, i + 1)),
                Tok::Ident("filter") if block.statement && i == 0 => Some((NameKind::Filter, 1)),
                Tok::Ident("is") if i > 0 && toks[i - 1].0 != Tok::Dot => {
                    let skip_not = toks.get(i + 1).is_some_and(|(t, _)| *t == Tok::Ident("not"));
                    Some((NameKind::Test, i + 1 + usize::from(skip_not)))
                }
                _ => None,
            };
            let Some((kind, first)) = start else {
                continue;
            };
            let Some(&(Tok::Ident(head), offset)) = toks.get(first) else {
                continue;
            };
            let mut name = head.to_string();
            let mut k = first;
            while let (Some((Tok::Dot, _)), Some((Tok::Ident(part), _))) = (toks.get(k + 1), toks.get(k + 2)) {
                name.push('.');
                name.push_str(part);
                k += 2;
            }
            names.push(CalledName { kind, name, offset });
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(json: &str) -> TemplateDef {
        serde_json::from_str(json).expect("a valid template definition")
    }

    fn text_def(key: &str, text: &str) -> TemplateDef {
        let variants =
            BTreeMap::from([(key.to_string(), ContentTemplate { text: Some(text.to_string()), attachments: vec![] })]);
        TemplateDef { purpose: Purpose::Marketing, vars: vec![], variants }
    }

    /// The errors of a one-variant text template.
    fn errors(text: &str, declared: &[&str]) -> Vec<TemplateError> {
        let declared: Vec<String> = declared.iter().map(|v| v.to_string()).collect();
        text_def("wecom", text).compile(&declared).expect_err("the template has errors")
    }

    /// (code, line, column) of each error, the shape most tests compare.
    fn spots(errors: &[TemplateError]) -> Vec<(&'static str, u32, u32)> {
        errors.iter().map(|e| (e.code, e.line, e.column)).collect()
    }

    fn compile(text: &str, declared: &[&str]) -> CompiledTemplate {
        let declared: Vec<String> = declared.iter().map(|v| v.to_string()).collect();
        text_def("default", text).compile(&declared).expect("a valid template")
    }

    fn render_text(template: &CompiledTemplate, channel: Channel, ctx: &RenderContext) -> Option<String> {
        template.render(channel, ctx).expect("renders").text
    }

    /// Someone the engine knows little about: no name, no orders, no event.
    fn stranger() -> RenderContext {
        RenderContext {
            name: None,
            tier: FanTier::None,
            rfm_group: None,
            orders: 0,
            net_revenue: Fen(0),
            last_order_at: None,
            last_order_amount: None,
            tags: vec![],
            traits: serde_json::Map::new(),
            event: None,
            campaign: None,
            vars: BTreeMap::new(),
            staff: None,
            ..RenderContext::sample()
        }
    }

    #[test]
    fn definitions_round_trip_through_json() {
        let json = r#"{"purpose":"marketing","variants":{"default":{"text":"{{ name | default(\"亲\") }}，春季上新"},"wecom":{"text":"春季上新","attachments":[{"type":"link","title":"新品","url":"https://shop.example.com/new?p={{ profile_id }}"}]}}}"#;
        let parsed = def(json);
        assert_eq!(parsed.purpose, Purpose::Marketing);
        assert_eq!(parsed.variants["wecom"].attachments[0].kind(), "link");
        assert_eq!(serde_json::to_string(&parsed).unwrap(), json);
        let service = def(r#"{"purpose":"service","variants":{"default":{"text":"x"}}}"#);
        assert_eq!(service.purpose, Purpose::Service);
    }

    #[test]
    fn purpose_defaults_to_marketing_and_unknown_fields_are_refused() {
        assert_eq!(def(r#"{"variants":{"default":{"text":"x"}}}"#).purpose, Purpose::Marketing);
        let extra = serde_json::from_str::<TemplateDef>(r#"{"variants":{},"name":"x"}"#).unwrap_err();
        assert!(extra.to_string().contains("unknown field `name`"), "{extra}");
        let in_variant = serde_json::from_str::<TemplateDef>(r#"{"variants":{"default":{"txt":"x"}}}"#).unwrap_err();
        assert!(in_variant.to_string().contains("unknown field `txt`"), "{in_variant}");
    }

    #[test]
    fn syntax_errors_point_into_the_field() {
        let found = errors("你好\n{{ name }", &[]);
        assert_eq!(spots(&found), [("template_syntax", 2, 9)]);
        assert_eq!(found[0].field, "variants.wecom.text");
        assert_eq!(found[0].variant, "wecom");

        assert_eq!(found[0].message, "syntax error: unexpected `}`, expected end of variable block");

        // minijinja points just past the block left open.
        let unclosed = errors("{% if orders > 1 %}老客户", &[]);
        assert_eq!(spots(&unclosed), [("template_syntax", 1, 20)]);
        assert_eq!(
            unclosed[0].message,
            "syntax error: unexpected end of input, expected end of block (is an {% endif %} or {% endfor %} missing?)"
        );
    }

    #[test]
    fn unknown_variables_are_found_with_their_place_and_a_suggestion() {
        let found = errors("Hi {{ nmae }}", &[]);
        assert_eq!(spots(&found), [("unknown_variable", 1, 7)]);
        assert_eq!(found[0].message, r#"unknown variable "nmae", did you mean "name""#);

        // The example of docs/templates.md.
        let documented = errors("亲{{ nmae }}，新品到了", &[]);
        assert_eq!(spots(&documented), [("unknown_variable", 1, 5)]);

        let far = errors("{{ coupon }}", &[]);
        assert_eq!(spots(&far), [("unknown_variable", 1, 4)]);
        assert!(far[0].message.starts_with(r#"unknown variable "coupon" (variables: name, profile_id, tier,"#));

        // Reported once per name, at its first use; a name inside a string or a comment is no use.
        let twice = errors("{# nmae #}{{ \"nmae\" }}{{ nmae }} {{ nmae.x }}", &[]);
        assert_eq!(spots(&twice), [("unknown_variable", 1, 26)]);
    }

    #[test]
    fn unknown_fields_of_closed_objects_are_found() {
        let event = errors("亲爱的{{ name }}，\n订单 {{ event.amout }} 元", &[]);
        assert_eq!(spots(&event), [("unknown_field", 2, 13)]);
        assert_eq!(event[0].message, r#"event has no field "amout", did you mean "amount""#);

        let campaign = errors("{{ campaign.nme }}", &[]);
        assert_eq!(spots(&campaign), [("unknown_field", 1, 13)]);
        assert_eq!(campaign[0].message, r#"campaign has no field "nme", did you mean "name""#);

        let leaf = errors("{{ tier.label }}", &[]);
        assert_eq!(spots(&leaf), [("unknown_field", 1, 9)]);
        assert_eq!(leaf[0].message, "tier has no fields, so tier.label does not exist");

        let vars = errors("券 {{ vars.coupon }} / {{ vars.coupon_code }}", &["coupon_code"]);
        assert_eq!(spots(&vars), [("unknown_field", 1, 11)]);
        assert_eq!(vars[0].message, "vars.coupon is not declared on the campaign (declared: coupon_code)");
        let none_declared = errors("{{ vars.code }}", &[]);
        assert_eq!(none_declared[0].message, "vars.code is not declared on the campaign (it declares none)");
    }

    #[test]
    fn open_objects_take_any_key_below_them() {
        let template = compile("{{ traits.city }} {{ event.properties.sku }} {{ traits['会员等级'] }}", &[]);
        let ctx = RenderContext::sample();
        assert_eq!(render_text(&template, Channel::Wecom, &ctx).as_deref(), Some("杭州 SKU-001 "));
    }

    #[test]
    fn unknown_filters_and_tests_are_found_even_in_branches_not_taken() {
        let filter = errors("{{ name | uper }}", &[]);
        assert_eq!(spots(&filter), [("unknown_filter", 1, 11)]);
        assert_eq!(filter[0].message, r#"unknown filter "uper", did you mean "upper""#);

        let test = errors("{% if orders is od %}x{% endif %}", &[]);
        assert_eq!(spots(&test), [("unknown_test", 1, 17)]);
        assert_eq!(test[0].message, r#"unknown test "od", did you mean "odd""#);

        let hidden = errors("{% if false %}\n{{ name | shout }}\n{% endif %}", &[]);
        assert_eq!(spots(&hidden), [("unknown_filter", 2, 11)]);
        let negated = errors("{% if name is not definedd %}x{% endif %}", &[]);
        assert_eq!(spots(&negated), [("unknown_test", 1, 19)]);
    }

    #[test]
    fn several_problems_come_back_together_in_order() {
        let found = errors("{{ nmae | uper }}\n{{ event.amout }}", &[]);
        assert_eq!(spots(&found), [("unknown_variable", 1, 4), ("unknown_filter", 1, 11), ("unknown_field", 2, 10)]);
    }

    #[test]
    fn errors_in_attachments_name_the_attachment_field() {
        let template = def(
            r#"{"variants":{"default":{"attachments":[{"type":"link","title":"{{ nmae }}的专属页","url":"https://x.example/{{ profile_id }}"}]}}}"#,
        );
        let found = template.compile(&[]).unwrap_err();
        assert_eq!(spots(&found), [("unknown_variable", 1, 4)]);
        assert_eq!(found[0].field, "variants.default.attachments[0].title");
    }

    #[test]
    fn empty_variants_unknown_channels_and_no_variants_are_refused() {
        let empty = def(r#"{"variants":{"douyin":{"text":"   "}}}"#).compile(&[]).unwrap_err();
        assert_eq!(spots(&empty), [("empty_variant", 0, 0)]);
        assert_eq!(empty[0].field, "variants.douyin");

        let unknown = def(r#"{"variants":{"weixin":{"text":"x"}}}"#).compile(&[]).unwrap_err();
        assert_eq!(spots(&unknown), [("unknown_channel", 0, 0)]);
        assert!(unknown[0]
            .message
            .starts_with(r#"unknown variant "weixin": a variant is "default" or a channel (douyin,"#));

        let none = def(r#"{"variants":{}}"#).compile(&[]).unwrap_err();
        assert_eq!(spots(&none), [("no_variant", 0, 0)]);
    }

    #[test]
    fn a_variant_its_channel_cannot_deliver_is_refused_at_save() {
        let both = def(
            r#"{"variants":{"douyin":{"text":"hi","attachments":[{"type":"image","pic_url":"https://x.example/a.png"}]}}}"#,
        );
        let found = both.compile(&[]).unwrap_err();
        assert_eq!(spots(&found), [("unsupported_content", 0, 0)]);
        assert_eq!(found[0].field, "variants.douyin.attachments");
        assert_eq!(found[0].message, "a douyin private message is a text or one image, not both");

        let long = errors(&"长".repeat(1334), &[]);
        assert_eq!(spots(&long), [("unsupported_content", 0, 0)]);
        assert_eq!(long[0].field, "variants.wecom.text");
        assert_eq!(long[0].message, "wecom takes at most 4000 bytes here, this is 4002 bytes");

        let no_url = def(r#"{"variants":{"default":{"attachments":[{"type":"link","title":"新品","url":""}]}}}"#);
        let found = no_url.compile(&[]).unwrap_err();
        assert_eq!(found[0].field, "variants.default.attachments[0].url");
        assert_eq!(found[0].message, "a link needs a url");
    }

    #[test]
    fn failures_of_the_sample_render_are_refused_at_save() {
        let found = errors("共 {{ orders + \"单\" }}", &[]);
        assert_eq!(spots(&found), [("render_failed", 1, 6)]);
        assert!(found[0].message.starts_with("invalid operation"), "{}", found[0].message);

        let runaway = errors("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", &[]);
        assert_eq!(runaway[0].code, "render_failed");
        assert!(runaway[0].message.contains("fuel"), "{}", runaway[0].message);
    }

    #[test]
    fn a_channel_variant_wins_over_the_default() {
        let template = def(r#"{"variants":{"default":{"text":"默认 {{ name }}"},"wecom":{"text":"企微 {{ name }}"}}}"#)
            .compile(&[])
            .unwrap();
        let ctx = RenderContext::sample();
        assert_eq!(render_text(&template, Channel::Wecom, &ctx).as_deref(), Some("企微 小雨"));
        assert_eq!(render_text(&template, Channel::Douyin, &ctx).as_deref(), Some("默认 小雨"));
        assert_eq!(render_text(&template, Channel::Other, &ctx).as_deref(), Some("默认 小雨"));

        let only_wecom = text_def("wecom", "企微").compile(&[]).unwrap();
        let missing = only_wecom.render(Channel::Douyin, &ctx).unwrap_err();
        assert_eq!(missing.code, "no_variant");
        assert_eq!(missing.message, "the template has no douyin variant and no default");
    }

    #[test]
    fn missing_values_render_as_nothing() {
        let template = compile(
            "[{{ name }}][{{ last_order_at }}][{{ last_order_amount }}][{{ rfm_group }}][{{ event.type }}]\
             [{{ event.properties.sku }}][{{ campaign.name }}][{{ staff.name }}][{{ traits.city }}][{{ none }}]\
             [{{ name | upper }}][{{ traits.slogan | truncate(3) }}][{% for t in tags %}{{ t }}{% endfor %}]",
            &[],
        );
        let mut ctx = stranger();
        ctx.traits.insert("city".to_string(), serde_json::Value::Null);
        assert_eq!(render_text(&template, Channel::Wecom, &ctx).as_deref(), Some("[][][][][][][][][][][][][]"));
    }

    #[test]
    fn the_chinese_coupon_template_renders() {
        let source = "{{ name | default(\"亲\") }}，您的{{ tier_label }}专属券 {{ vars.coupon_code }}";
        let template = compile(source, &["coupon_code"]);
        let mut ctx = stranger();
        ctx.tier = FanTier::TrueFan;
        ctx.vars.insert("coupon_code".to_string(), "VIP-88".to_string());
        assert_eq!(render_text(&template, Channel::Wecom, &ctx).as_deref(), Some("亲，您的真爱粉专属券 VIP-88"));
        ctx.name = Some("小雨".to_string());
        ctx.tier = FanTier::WarmFan;
        assert_eq!(render_text(&template, Channel::Wecom, &ctx).as_deref(), Some("小雨，您的好感粉专属券 VIP-88"));
        ctx.name = Some(String::new());
        ctx.tier = FanTier::None;
        assert_eq!(render_text(&template, Channel::Wecom, &ctx).as_deref(), Some("亲，您的—专属券 VIP-88"));
        assert_eq!(
            template.preview(Channel::Wecom).unwrap().text.as_deref(),
            Some("小雨，您的真爱粉专属券 [coupon_code]")
        );
    }

    #[test]
    fn conditions_money_and_the_truncate_filter() {
        let template = compile(
            "{% if tier == \"true_fan\" %}\nVIP\n{% else %}\n朋友\n{% endif %}\n累计 {{ net_revenue }} 元，最近 {{ last_order_amount }} 元\n{{ event.properties.title | truncate(4) }}|{{ \"短\" | truncate(4) }}",
            &[],
        );
        let ctx = RenderContext::sample();
        assert_eq!(
            render_text(&template, Channel::Wecom, &ctx).as_deref(),
            Some("VIP\n累计 597.00 元，最近 199.00 元\n玻尿酸…|短")
        );
    }

    #[test]
    fn render_checks_the_channel_it_renders_for() {
        let template = def(r#"{"variants":{"default":{"text":"看看","attachments":[{"type":"image","media_id":"M1"},{"type":"image","media_id":"M2"}]}}}"#)
            .compile(&[])
            .unwrap();
        let ctx = RenderContext::sample();
        assert_eq!(template.render(Channel::Wecom, &ctx).unwrap().attachments.len(), 2);
        let douyin = template.render(Channel::Douyin, &ctx).unwrap_err();
        assert_eq!((douyin.code, douyin.field.as_str()), ("unsupported_content", "variants.default.attachments"));
        let mp = template.preview(Channel::WechatMp).unwrap_err();
        assert_eq!(mp.code, "unsupported_content");
    }

    #[test]
    fn attachments_whose_required_fields_render_empty_fail() {
        let template = def(r#"{"variants":{"default":{"attachments":[{"type":"link","title":"{{ campaign.name }}","url":"https://x.example/c/{{ vars.code }}","desc":"{{ traits.slogan }}"}]}}}"#)
            .compile(&["code".to_string()])
            .unwrap();
        let preview = template.preview(Channel::Wecom).unwrap();
        assert_eq!(
            preview.attachments,
            [Attachment::Link {
                title: "示例活动".to_string(),
                url: "https://x.example/c/[code]".to_string(),
                pic_url: None,
                desc: None,
            }]
        );
        let failed = template.render(Channel::Wecom, &stranger()).unwrap_err();
        assert_eq!(
            (failed.code, failed.field.as_str()),
            ("unsupported_content", "variants.default.attachments[0].title")
        );
        assert_eq!(failed.message, "a link needs a title");
    }

    #[test]
    fn literal_fields_skip_the_engine_and_only_read_variables_are_built() {
        let template = def(r#"{"variants":{"default":{"text":"纯文本","attachments":[{"type":"link","title":"{{ traits.city }}","url":"https://x.example"}]}}}"#)
            .compile(&[])
            .unwrap();
        let (_, variant) = &template.inner.variants[0];
        let kinds: Vec<bool> = variant.pieces.iter().map(|p| matches!(p, Piece::Literal)).collect();
        assert_eq!(kinds, [true, false, true]);
        assert_eq!(variant.roots, [Root::Traits]);
        assert!(template.reads("traits"));
        assert!(!template.reads("event"));
        assert_eq!(template.preview(Channel::Wecom).unwrap().text.as_deref(), Some("纯文本"));
    }

    #[test]
    fn a_compiled_template_is_shared_across_threads() {
        fn send_sync<T: Send + Sync>(value: T) -> T {
            value
        }
        let template = send_sync(compile("{{ name }}好", &[]));
        let shared = template.clone();
        let rendered = std::thread::spawn(move || shared.render(Channel::Wecom, &RenderContext::sample()))
            .join()
            .expect("the thread finishes")
            .expect("renders");
        assert_eq!(rendered.text.as_deref(), Some("小雨好"));
        assert_eq!(template.purpose(), Purpose::Marketing);
    }

    #[test]
    fn the_suggested_filters_and_tests_exist() {
        let env = environment();
        for filter in SUGGESTED_FILTERS {
            assert!(exists(&env, "filter", filter), "filter {filter}");
        }
        for test in SUGGESTED_TESTS {
            assert!(exists(&env, "test", test), "test {test}");
        }
        assert!(!exists(&env, "filter", "shout"));
        assert!(!exists(&env, "test", "shouting"));
    }

    #[test]
    fn debug_is_not_a_variable() {
        assert_eq!(spots(&errors("{{ debug() }}", &[])), [("unknown_variable", 1, 4)]);
        let globals = compile("{% for i in range(2) %}{{ i }}{% endfor %}", &[]);
        assert_eq!(render_text(&globals, Channel::Wecom, &RenderContext::sample()).as_deref(), Some("01"));
    }

    #[test]
    fn positions_count_characters_and_lines() {
        assert_eq!(position("ab\n亲爱的x", 12), (2, 4));
        assert_eq!(position("abc", 0), (1, 1));
        assert_eq!(position("abc", 99), (1, 4));
    }

    #[test]
    fn the_docs_examples_hold() {
        let docs = include_str!("../../../../docs/templates.md");
        let declared: Vec<String> =
            ["live_time", "live_url", "coupon_code", "coupon_amount"].iter().map(|v| v.to_string()).collect();
        let mut templates = 0;
        for block in docs.split("```json\n").skip(1) {
            let json = &block[..block.find("```").expect("a closed code block")];
            let Ok(template) = serde_json::from_str::<TemplateDef>(json) else {
                continue;
            };
            let compiled = template.compile(&declared).unwrap_or_else(|e| panic!("{json}: {e:?}"));
            for key in template.variants.keys() {
                let channel = Channel::parse(key).unwrap_or(Channel::Other);
                compiled.preview(channel).unwrap_or_else(|e| panic!("{key}: {e}"));
            }
            templates += 1;
        }
        assert_eq!(templates, 4, "the opening example and the three at the end");

        let ctx = RenderContext::sample();
        let cases = [
            ("{{ '%.1f' | format(affinity) }}", "86.5"),
            ("{{ affinity | int }}", "86"),
            ("{{ affinity | round }}", "86.0"),
            ("{{ tags | join('、') }}", "高复购、直播常客"),
            ("{{ traits.city | replace('州', '') }}", "杭"),
            ("{{ 'vip' | upper }}", "VIP"),
            ("{% if '高复购' in tags %}yes{% endif %}", "yes"),
            ("{% if net_revenue | float >= 500 %}big{% endif %}", "big"),
            ("{{ '玻尿酸精华液' | truncate(4) }}", "玻尿酸…"),
            ("a{# 618 用 #}b", "ab"),
        ];
        for (source, expected) in cases {
            assert_eq!(render_text(&compile(source, &[]), Channel::Wecom, &ctx).as_deref(), Some(expected), "{source}");
        }
        let macro_error = errors("{% macro hi() %}x{% endmacro %}", &[]);
        assert_eq!(macro_error[0].code, "template_syntax", "macros are not available");
    }

    #[test]
    fn a_template_saved_before_its_campaigns_accepts_any_var_and_lists_them() {
        let any = ["*".to_string()];
        let template = def(
            r#"{"variants":{"default":{"text":"券 {{ vars.coupon_code }}","attachments":[{"type":"link","title":"领券","url":"{{ vars.url }}"}]}}}"#,
        );
        let compiled = template.compile(&any).expect("any var is accepted");
        assert_eq!(compiled.vars(), ["coupon_code", "url"]);
        let preview = compiled.preview(Channel::Wecom).unwrap();
        assert_eq!(preview.text.as_deref(), Some("券 [coupon_code]"));
        assert_eq!(
            preview.attachments[0],
            Attachment::Link { title: "领券".into(), url: "[url]".into(), pic_url: None, desc: None }
        );

        // The campaign compiles it with the names it supplies.
        let campaign = template.compile(&["coupon_code".to_string()]).unwrap_err();
        assert_eq!(spots(&campaign), [("unknown_field", 1, 9)]);
        assert_eq!(campaign[0].field, "variants.default.attachments[0].url");
        assert_eq!(campaign[0].message, "vars.url is not declared on the campaign (declared: coupon_code)");
    }

    #[test]
    fn a_template_that_lists_its_vars_is_held_to_the_list() {
        let listed = def(
            r#"{"vars":["coupon_code"],"variants":{"default":{"text":"{{ vars.coupon_code }} {{ vars.cupon_code }}"}}}"#,
        );
        let found = listed.compile(&["*".to_string()]).unwrap_err();
        assert_eq!(spots(&found), [("unknown_field", 1, 32)]);
        assert_eq!(found[0].message, "vars.cupon_code is not in the template's vars (coupon_code)");
        assert_eq!(serde_json::to_value(&listed).unwrap()["vars"], serde_json::json!(["coupon_code"]));
    }

    #[test]
    fn the_docs_describe_every_variable() {
        let docs = include_str!("../../../../docs/templates.md");
        for root in Root::ALL {
            assert!(docs.contains(&format!("`{}`", root.name())), "docs/templates.md lacks `{}`", root.name());
            if let Shape::Fields(fields) = root.shape() {
                for (field, _) in *fields {
                    let path = format!("`{}.{field}`", root.name());
                    assert!(docs.contains(&path), "docs/templates.md lacks {path}");
                }
            }
        }
    }
}
