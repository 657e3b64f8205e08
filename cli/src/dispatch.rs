//! From parsed arguments to the library: each verb opens what it needs (a
//! session from the profile, a NATS connection, a configuration) and calls
//! the module of `plantd_cli` that does the work.

use plantd_cli::commands;
use plantd_cli::session::Session;
use plantd_cli::up::{self, EdgeOverrides, HttpOverrides, NatsOverrides, UpOverrides};

use crate::args::{
    AlertsCmd, AnalyticsCmd, AnalyticsRulesCmd, AuditCmd, ChannelsCmd, Cli, CommandsCmd, DlqCmd,
    RulesCmd, SitesCmd, StateCmd, Verb,
};
use crate::input::{read_password, read_payload};

/// Runs the verb `cli` names with its global options.
///
/// # Errors
/// What the verb failed with; a [`plantd_cli::session::CliError`] carries
/// the exit code.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli {
        profile,
        json,
        command,
    } = cli;
    match command {
        Verb::Login {
            url,
            email,
            password_file,
            sites,
        } => {
            let password = read_password(password_file.as_deref())?;
            let s = Session::login(profile.as_deref(), &url, &email, &password, &sites).await?;
            let _ = s;
            println!("logged in to {url} as {email}");
            Ok(())
        }
        Verb::Logout => {
            Session::open(profile.as_deref()).await?.logout().await?;
            println!("logged out");
            Ok(())
        }
        Verb::Whoami => commands::whoami(&Session::open(profile.as_deref()).await?, json).await,
        Verb::Token => {
            println!(
                "{}",
                Session::open(profile.as_deref()).await?.access_token()
            );
            Ok(())
        }
        Verb::State { cmd } => {
            let s = Session::open(profile.as_deref()).await?;
            match cmd {
                StateCmd::Scopes { create } => commands::scopes(&s, create.as_deref(), json).await,
                StateCmd::List { scope } => commands::list(&s, &scope, json).await,
                StateCmd::Get { scope, key } => commands::get(&s, &scope, &key, json).await,
                StateCmd::Set {
                    scope,
                    key,
                    value,
                    if_match,
                    content_type,
                } => {
                    commands::set(
                        &s,
                        &scope,
                        &key,
                        &value,
                        if_match.as_deref(),
                        &content_type,
                        json,
                    )
                    .await
                }
                StateCmd::Delete { scope, key } => commands::delete(&s, &scope, &key).await,
            }
        }
        Verb::Command {
            site,
            topic,
            payload,
            qos,
            ttl,
            retain,
        } => {
            let s = Session::open(profile.as_deref()).await?;
            let args = commands::CommandArgs {
                site: &site,
                topic: &topic,
                payload: &payload,
                qos,
                ttl,
                retain,
            };
            commands::command(&s, args, json).await
        }
        Verb::Commands { cmd } => {
            let s = Session::open(profile.as_deref()).await?;
            match cmd {
                CommandsCmd::Pending { site, limit } => {
                    commands::pending(&s, &site, limit, json).await
                }
                CommandsCmd::Cancel { site, id } => commands::cancel(&s, &site, id, json).await,
            }
        }
        Verb::Call {
            site,
            topic,
            payload,
            timeout_ms,
        } => {
            commands::call(
                &Session::open(profile.as_deref()).await?,
                &site,
                &topic,
                &payload,
                timeout_ms,
            )
            .await
        }
        Verb::History {
            site,
            filter,
            limit,
        } => {
            commands::history(
                &Session::open(profile.as_deref()).await?,
                &site,
                &filter,
                limit,
                json,
            )
            .await
        }
        Verb::Sub {
            site,
            filters,
            count,
        } => {
            let mut s = Session::open(profile.as_deref()).await?;
            let args = plantd_cli::live::SubArgs {
                site: &site,
                filters: &filters,
                count,
                json,
            };
            plantd_cli::live::sub(&mut s, args).await
        }
        Verb::Logs {
            site,
            source,
            level,
            since,
            until,
            filter,
            limit,
            follow,
        } => {
            let mut s = Session::open(profile.as_deref()).await?;
            let args = plantd_cli::logs::LogsArgs {
                site: site.as_deref(),
                source: source.as_deref(),
                level: level.as_deref(),
                since: since.as_deref(),
                until: until.as_deref(),
                filter: filter.as_deref(),
                limit,
                follow,
                json,
            };
            plantd_cli::logs::logs(&mut s, args).await
        }
        Verb::Pub {
            site,
            topic,
            payload,
            file,
            qos,
            retain,
            ttl,
            content_type,
        } => {
            use plantd_cli::live::Payload;
            let payload = match (payload, file) {
                (Some(p), _) => Payload::Text(p),
                (None, Some(f)) => Payload::Bytes(read_payload(&f)?),
                (None, None) => Payload::Text(String::new()),
            };
            let s = Session::open(profile.as_deref()).await?;
            let args = plantd_cli::live::PubArgs {
                site: &site,
                topic: &topic,
                payload,
                qos,
                retain,
                ttl,
                content_type: content_type.as_deref(),
            };
            plantd_cli::live::publish(&s, args, json).await
        }
        Verb::Streams {
            nats_url,
            creds,
            tls_ca,
            replicas,
            mirror_into,
            retention_days,
            duplicate_window_mins,
        } => {
            let options = plantd_cli::streams::Options {
                url: nats_url,
                creds,
                ca: tls_ca,
                replicas,
                mirror_into,
                retention: retention_days
                    .map(|d| std::time::Duration::from_secs(d.saturating_mul(86_400))),
                duplicate_window: duplicate_window_mins
                    .map(|m| std::time::Duration::from_secs(m.saturating_mul(60))),
            };
            plantd_cli::streams::ensure(&options).await
        }
        Verb::Rules { cmd } => {
            use plantd_cli::rules;
            let s = Session::open(profile.as_deref()).await?;
            match cmd {
                RulesCmd::List => rules::list(&s, json).await,
                RulesCmd::Get { id } => rules::get(&s, &id).await,
                RulesCmd::Apply { file } => rules::apply(&s, &file, json).await,
                RulesCmd::Delete { id } => rules::delete(&s, &id).await,
            }
        }
        Verb::Analytics { cmd } => {
            use plantd_cli::analytics;
            let s = Session::open(profile.as_deref()).await?;
            match cmd {
                AnalyticsCmd::Rules { cmd } => match cmd {
                    AnalyticsRulesCmd::List => analytics::list(&s, json).await,
                    AnalyticsRulesCmd::Get { name } => analytics::get(&s, &name).await,
                    AnalyticsRulesCmd::Put {
                        name,
                        sql,
                        file,
                        sites,
                        at,
                        disabled,
                        alert_severity,
                        alert_channels,
                    } => {
                        let args = analytics::PutArgs {
                            sql,
                            file,
                            sites,
                            at,
                            disabled,
                            alert_severity,
                            alert_channels,
                        };
                        analytics::put(&s, &name, &args, json).await
                    }
                    AnalyticsRulesCmd::Delete { name } => analytics::delete(&s, &name).await,
                },
                AnalyticsCmd::Results {
                    site,
                    rule,
                    key,
                    from,
                    to,
                    limit,
                } => {
                    let args = analytics::ResultsArgs {
                        site,
                        rule,
                        key,
                        from,
                        to,
                        limit,
                    };
                    analytics::results(&s, &args, json).await
                }
            }
        }
        Verb::Alerts { cmd } => {
            use plantd_cli::alerts;
            let s = Session::open(profile.as_deref()).await?;
            match cmd {
                AlertsCmd::List {
                    state,
                    site,
                    severity,
                } => {
                    let filter = alerts::ListFilter {
                        state: state.as_deref(),
                        site: site.as_deref(),
                        severity: severity.as_deref(),
                    };
                    alerts::list(&s, &filter, json).await
                }
                AlertsCmd::Ack { id, note } => alerts::ack(&s, &id, &note, json).await,
                AlertsCmd::History { id } => alerts::history(&s, &id, json).await,
                AlertsCmd::Silence {
                    matchers,
                    duration,
                    comment,
                } => alerts::silence(&s, &matchers, &duration, &comment, json).await,
                AlertsCmd::Silences => alerts::silences(&s, json).await,
                AlertsCmd::Unsilence { id } => alerts::unsilence(&s, &id).await,
            }
        }
        Verb::Channels { cmd } => {
            use plantd_cli::channels;
            let s = Session::open(profile.as_deref()).await?;
            match cmd {
                ChannelsCmd::List => channels::list(&s, json).await,
                ChannelsCmd::Get { name } => channels::get(&s, &name, json).await,
                ChannelsCmd::Apply { file } => channels::apply(&s, &file, json).await,
                ChannelsCmd::Delete { name } => channels::delete(&s, &name).await,
                ChannelsCmd::Test { name } => channels::test(&s, &name, json).await,
            }
        }
        Verb::Sites { cmd } => {
            use plantd_cli::sites;
            let s = Session::open(profile.as_deref()).await?;
            match cmd {
                SitesCmd::List { org } => sites::list(&s, org.as_deref(), json).await,
                SitesCmd::Create {
                    id,
                    name,
                    description,
                    labels,
                    org,
                } => {
                    let site = sites::NewSite {
                        id: &id,
                        name: name.as_deref(),
                        description: description.as_deref(),
                        labels: &labels,
                        org: org.as_deref(),
                    };
                    sites::create(&s, site, json).await
                }
                SitesCmd::Get { id } => sites::get(&s, &id, json).await,
                SitesCmd::Delete { id } => sites::delete(&s, &id).await,
            }
        }
        Verb::Dlq {
            nats_url,
            creds,
            cmd,
        } => match cmd {
            DlqCmd::List { consumer, limit } => {
                let consumer = consumer.as_deref();
                plantd_cli::dlq::list(&nats_url, creds.as_deref(), consumer, limit, json).await
            }
            DlqCmd::Replay { seq, timeout } => {
                let timeout = std::time::Duration::from_secs(timeout);
                plantd_cli::dlq::replay(&nats_url, creds.as_deref(), seq, timeout, json).await
            }
        },
        Verb::Audit {
            cmd,
            org,
            actor,
            action,
            target,
            since,
            until,
            limit,
        } => {
            let s = Session::open(profile.as_deref()).await?;
            match cmd {
                Some(AuditCmd::Verify) => plantd_cli::audit::verify(&s, org.as_deref(), json).await,
                None => {
                    let filters = plantd_cli::audit::Filters {
                        org: org.as_deref(),
                        actor: actor.as_deref(),
                        action: action.as_deref(),
                        target: target.as_deref(),
                        since: since.as_deref(),
                        until: until.as_deref(),
                        limit,
                    };
                    plantd_cli::audit::list(&s, filters, json).await
                }
            }
        }
        Verb::Functions {
            config,
            nats_url,
            http_listen,
        } => {
            let overrides = plantd_cli::functions::FunctionsOverrides {
                nats_url,
                http_listen,
            };
            let config = plantd_cli::functions::load_config(config.as_deref(), &overrides)?;
            plantd_cli::functions::run(config, up::shutdown_signal()).await
        }
        Verb::Up {
            config,
            data_dir,
            nats_host,
            nats_port,
            http_listen,
            app_dir,
            mqtt_listen,
            edge_http_listen,
            allow_anonymous,
        } => {
            let overrides = UpOverrides {
                data_dir,
                nats: NatsOverrides {
                    host: nats_host,
                    port: nats_port,
                },
                http: HttpOverrides {
                    listen: http_listen,
                    app_dir,
                },
                edge: EdgeOverrides {
                    mqtt_listen,
                    http_listen: edge_http_listen,
                    allow_anonymous: allow_anonymous.then_some(true),
                },
            };
            let config = up::load_config(config.as_deref(), &overrides)?;
            up::run(config, up::shutdown_signal()).await
        }
    }
}
