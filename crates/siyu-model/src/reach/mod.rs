//! Reach (触达): what a message says and the rules every send obeys, as pure data and functions.
//! The records (templates, campaigns, the outbox) live in siyu-store; delivery in siyu-connect.

pub mod campaign;
pub mod content;
pub mod guardrail;
pub mod template;

pub use campaign::{in_holdout, Audience, CampaignSpec, ConnectorKind, SendAccount, MASK};
pub use content::{Attachment, ContentError, MessageContent};
pub use guardrail::{
    Cap, FrequencyCap, Guardrails, Per, PersonReach, QuietHours, QuotaRule, ReachRules, RulesError, SendRequest,
    SendScope, Sent, Verdict, Window,
};
pub use template::{
    CampaignContext, CompiledTemplate, ContentTemplate, EventContext, Purpose, RenderContext, RenderError,
    StaffContext, TemplateDef, TemplateError,
};
