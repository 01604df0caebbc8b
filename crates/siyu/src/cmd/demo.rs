//! `siyu demo`: a realistic simulated merchant on the embedded store, loaded once (a rerun reuses
//! it), summarised, and served.

use std::process::ExitCode;
use std::sync::Arc;

use siyu_engine::query::TenantSummary;
use siyu_engine::Engine;
use siyu_engine::KeyRole;
use siyu_model::{Industry, Millis, TenantId};
use siyu_sim::SimConfig;

use super::import::{import, progress_bar, Format};
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Listen address (overrides server.bind).
    #[arg(long)]
    pub bind: Option<String>,
    /// The demo merchant's industry.
    #[arg(long, default_value = "consumer_goods")]
    pub industry: Industry,
    /// Days of simulated history, ending now.
    #[arg(long, default_value_t = 180)]
    pub days: u32,
    /// People reached in the public domain over the period.
    #[arg(long, default_value_t = 50_000)]
    pub audience: u32,
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Load and summarise, then exit instead of serving.
    #[arg(long)]
    pub no_serve: bool,
}

const DEMO_TENANT: &str = "demo";

pub async fn run(settings: &Settings, args: Args) -> anyhow::Result<ExitCode> {
    let engine = super::open_engine(settings).await?;
    let (tenant, write_key, secret_key) = match engine.tenant_by_name(DEMO_TENANT).await? {
        Some(record) if engine.logged_events(record.id).await? > 0 => {
            eprintln!("Reusing the demo merchant already loaded in {} (delete it to start over).", settings.store.url);
            // Keys are stored hashed, so fresh ones are issued for this session.
            let write = engine.issue_key(record.id, KeyRole::Write).await?;
            let secret = engine.issue_key(record.id, KeyRole::Secret).await?;
            (record.id, write, secret)
        }
        existing => {
            let (tenant, write, secret) = match existing {
                Some(record) => (
                    record.id,
                    engine.issue_key(record.id, KeyRole::Write).await?,
                    engine.issue_key(record.id, KeyRole::Secret).await?,
                ),
                None => {
                    let created = engine.create_tenant(DEMO_TENANT, args.industry).await?;
                    (created.record.id, created.write_key, created.secret_key)
                }
            };
            load(&engine, tenant, &args).await?;
            (tenant, write, secret)
        }
    };
    let summary = engine.summary(tenant, None)?;
    print_summary(&summary);
    demo_campaign(&engine, tenant, settings).await?;
    print_next_steps(&settings.server.bind, &write_key, &secret_key);
    if args.no_serve {
        engine.shutdown();
        return Ok(ExitCode::SUCCESS);
    }
    super::serve(engine, &settings.server.bind, settings.dispatcher_config()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn load(engine: &Arc<Engine>, tenant: TenantId, args: &Args) -> anyhow::Result<()> {
    let config = SimConfig {
        days: args.days,
        audience: args.audience,
        tenant_label: "demo".into(),
        ..SimConfig::new(args.industry, args.seed, Millis::now())
    };
    eprintln!(
        "Simulating {} days of a {} merchant ({}) reaching {} people, and loading it …",
        args.days,
        args.industry.as_str(),
        args.industry.label_zh(),
        args.audience
    );
    // The simulator writes NDJSON into a pipe and the importer reads it: the demo loads through
    // exactly the path `siyu import` takes.
    let (reader, writer) = std::io::pipe()?;
    let writer_thread = std::thread::spawn(move || siyu_sim::write_ndjson(&config, std::io::BufWriter::new(writer)));
    let progress = progress_bar(0, false);
    progress.set_message("events");
    let report =
        import(engine, tenant, Box::new(reader), Format::Ndjson, engine.config().time_limits, &progress).await?;
    progress.finish_and_clear();
    writer_thread.join().map_err(|_| anyhow::anyhow!("the simulator panicked"))??;
    eprintln!(
        "Loaded {} events ({} duplicate re-sends skipped, {} rejected) in {:.1}s.",
        report.accepted,
        report.duplicates,
        report.rejected.len(),
        report.seconds
    );
    anyhow::ensure!(report.rejected.is_empty(), "the simulator produced invalid events: {:?}", &report.rejected[..1]);
    Ok(())
}

const DEMO_ACCOUNT: &str = "demo-wecom";
const DEMO_SEGMENT: &str = "好感粉 warm fans";

/// Sends two campaigns the way an operator would — a marketing coupon and a service notice —
/// each from a template to a segment, with a dry run that names every guardrail that holds
/// people back, the plan, and the outbox delivering through the log connector (into a file beside
/// the store). Marketing planned in quiet hours waits for their end; the service notice goes now.
/// A rerun shows the campaigns already sent.
async fn demo_campaign(engine: &Arc<Engine>, tenant: TenantId, settings: &Settings) -> anyhow::Result<()> {
    use siyu_model::reach::{ConnectorKind, SendAccount};
    let data_dir = super::data_dir(&settings.store.url);
    let outbox_file = data_dir.join("demo-outbox.ndjson");
    let mut tenant_settings = engine.settings(tenant)?;
    if !tenant_settings.send_accounts.contains_key(DEMO_ACCOUNT) {
        tenant_settings.send_accounts.insert(
            DEMO_ACCOUNT.into(),
            SendAccount {
                channel: siyu_model::Channel::Wecom,
                connector: ConnectorKind::Log,
                account_type: Some("wecom_corp".into()),
                base_url: Some(outbox_file.display().to_string()),
                credentials: Default::default(),
                rate_per_second: None,
                staff: vec![],
            },
        );
        engine.update_settings(tenant, tenant_settings).await?;
    }
    let segment = match engine.segments(tenant)?.into_iter().find(|s| s.name == DEMO_SEGMENT) {
        Some(s) => s.id,
        None => engine.create_segment(tenant, DEMO_SEGMENT, "tier = warm_fan").await?.id,
    };
    let coupon = serde_json::json!({
        "purpose": "marketing",
        "vars": ["coupon_code"],
        "variants": {"default": {
            "text": "{{ name | default(\"亲\") }}，感谢一直以来的支持！作为{{ tier_label }}，送您一张回购券 {{ vars.coupon_code }}，7 天内有效。回复 TD 退订",
            "attachments": [{"type": "link", "title": "专属回购券", "url": "https://example.com/coupon/{{ vars.coupon_code }}"}]
        }}
    });
    let notice = serde_json::json!({
        "purpose": "service",
        "variants": {"default": {"text": "{{ name | default(\"亲\") }}，您的会员积分已更新，当前累计消费 ¥{{ net_revenue }}。"}}
    });
    let mut ids = Vec::new();
    // Two staff members: WeCom lets one staff member send one customer one mass message a day.
    for (name, template, definition, vars, holdout, sender) in [
        (
            "好感粉回购券 warm-fan repurchase coupon",
            "回购券 repurchase coupon",
            coupon,
            vec![("coupon_code", "HG2026")],
            10,
            "staff-01",
        ),
        ("会员积分通知 points notice", "积分通知 points notice", notice, vec![], 0, "staff-02"),
    ] {
        ids.push(demo_one(engine, tenant, segment, name, template, definition, &vars, holdout, sender).await?);
    }
    let dispatcher = siyu_outbox::Dispatcher::new(engine.clone(), settings.dispatcher_config());
    // Plan and deliver now, so the results below are the campaigns'.
    for _ in 0..10_000 {
        let tick = dispatcher.tick(tenant).await?;
        if tick.claimed == 0 && tick.planned == 0 {
            break;
        }
    }
    for id in ids {
        let report = engine.campaign_report(tenant, id).await?;
        let queued: u64 =
            report.outbox.iter().filter(|(s, _)| *s == siyu_store::OutboxState::Queued).map(|(_, n)| n).sum();
        println!(
            "  campaign {} {:?} ({}): planned {}, sent {}, failed {}, waiting for the end of quiet hours {}",
            report.campaign.id,
            report.campaign.name,
            report.campaign.state.as_str(),
            report.planned,
            report.sent,
            report.failed,
            queued
        );
        for (rule, n) in &report.held {
            println!("    held back by {rule:<28} {n:>7}");
        }
    }
    println!("  messages written to {}", outbox_file.display());
    println!();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn demo_one(
    engine: &Arc<Engine>,
    tenant: TenantId,
    segment: i64,
    name: &str,
    template_name: &str,
    definition: serde_json::Value,
    vars: &[(&str, &str)],
    holdout_percent: u8,
    sender: &str,
) -> anyhow::Result<i64> {
    use siyu_model::reach::{Audience, CampaignSpec, SendScope};
    if let Some(c) = engine.campaigns(tenant).await?.into_iter().find(|c| c.name == name) {
        return Ok(c.id);
    }
    let def: siyu_model::reach::template::TemplateDef = serde_json::from_value(definition)?;
    let template = match engine.templates(tenant).await?.into_iter().find(|t| t.name == template_name) {
        Some(t) => t.id,
        None => engine.create_template(tenant, template_name, &def).await?.id,
    };
    let spec = CampaignSpec {
        template_id: template,
        audience: Audience::SegmentId(segment),
        channel: siyu_model::Channel::Wecom,
        account: DEMO_ACCOUNT.into(),
        sender: Some(sender.into()),
        scope: SendScope::Mass,
        vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        send_at: None,
        holdout_percent,
        attribution_days: Some(7),
        confirm_hours: None,
    };
    let dry = engine.dry_run(tenant, &spec).await?;
    println!(
        "  群发 campaign {name:?}, dry run: audience {}, holdout {}, would send {}{}",
        dry.audience,
        dry.holdout,
        dry.would_send,
        dry.first_send_at.map(|t| format!(", first at {t}")).unwrap_or_default()
    );
    for (rule, n) in &dry.held {
        println!("    held back by {rule:<28} {n:>7}");
    }
    Ok(engine.create_campaign(tenant, name, &spec).await?.id)
}

fn print_summary(s: &TenantSummary) {
    println!();
    println!(
        "  顾客 customers {:>9}    可触达 reachable {:>9}    事件 events {:>10}",
        s.profiles, s.reachable, s.events
    );
    println!(
        "  订单 orders    {:>9}    退款 refunds     {:>9}    净收入 net revenue ¥{:.2}",
        s.orders, s.refunds, s.net_revenue
    );
    println!("  复购率 repurchase {:.1}%    合并 merges {}", s.repurchase_rate * 100.0, s.merges);
    for (title, counts) in [
        ("粉丝分层 fan tier", &s.tiers),
        ("四步流量池 pool stage", &s.pool_stages),
        ("流量产权 ownership", &s.ownership),
    ] {
        println!();
        println!("  {title}");
        for c in counts.iter() {
            let bar = "█".repeat(((c.count as f64 / s.profiles.max(1) as f64) * 40.0).ceil() as usize);
            println!("    {:<10} {:<12} {:>9}  {bar}", c.key, c.label, c.count);
        }
    }
    println!();
    println!("  RFM");
    for c in s.rfm.iter().filter(|c| c.count > 0) {
        println!("    {:<12} {:>9}", c.label, c.count);
    }
    println!();
}

fn print_next_steps(bind: &str, write_key: &str, secret_key: &str) {
    println!("  write key  {write_key}");
    println!("  secret key {secret_key}");
    println!();
    println!("  Try:");
    println!("    curl -s -H 'Authorization: Bearer {secret_key}' http://{bind}/api/v1/summary");
    println!(
        "    curl -s -H 'Authorization: Bearer {secret_key}' 'http://{bind}/api/v1/profiles?tier=true_fan&limit=5'"
    );
    println!(
        "    curl -s -u '{write_key}:' http://{bind}/v1/track -d '{{\"userId\":\"u-1\",\"event\":\"Order Completed\",\"properties\":{{\"total\":99.9}}}}'"
    );
    println!("    curl -s -H 'Authorization: Bearer {secret_key}' 'http://{bind}/api/v1/profiles/lookup?kind=user_id&value=u-1'");
    println!("    curl -s -H 'Authorization: Bearer {secret_key}' http://{bind}/api/v1/campaigns/1");
    println!("    open http://{bind}/openapi.json for every route");
    println!();
}
