//! The bulk flush of parked work: a batch lease, every record decided again from
//! its canonical state, updates in bulk calls where the target has them, one commit.

use domain::authority::wrote;
use domain::history::Entry;
use domain::plan::Side;
use domain::record::Fields;
use store::EventRef;

use super::commit::{finish, settle};
use super::effects::rejected;
use super::memory::load;
use super::{Decision, Failure, Op, Processor, Trigger};
use crate::classify::{self, Action};

impl Processor {
    /// Flushes one batch of a rule's parked work, if its rule, systems and write window
    /// allow: every record is decided again from its canonical state, updates go in
    /// bulk calls where the target has them, and the whole batch commits together (or
    /// rolls back into the parked table). Returns how many records it took.
    pub async fn flush(&self, rule_name: &str) -> Result<usize, Failure> {
        let Some(rule) = self.rules.rule(rule_name) else {
            return Ok(0);
        };
        if self.window_closed(rule).is_some() {
            return Ok(0);
        }
        let paused = self.store.paused().await?;
        let is_paused =
            |scope: &str, name: &str| paused.iter().any(|p| p.scope == scope && p.name == name);
        if is_paused("rule", &rule.name)
            || is_paused("system", &rule.source.system)
            || is_paused("system", &rule.target.system)
        {
            return Ok(0);
        }
        let target = self
            .connectors
            .endpoint(&rule.target.system, &rule.target.entity)?;
        let bulk_max = target.bulk_max();
        let Some(store::Batch { mut tx, parked }) = self
            .store
            .begin_batch(&rule.name, bulk_max.unwrap_or(100) as i64)
            .await?
        else {
            return Ok(0);
        };
        struct Item {
            ev: Trigger,
            record_id: String,
            entries: Vec<Entry>,
            decision: Option<Decision>,
            bulk_ops: Vec<Op>,
        }
        let mut items = vec![];
        for row in &parked {
            let Some(ev) = Trigger::unparked(&row.event, rule) else {
                tracing::error!(
                    rule = rule.name,
                    record = row.source_record_id,
                    "a parked event cannot be read; it is dropped"
                );
                continue;
            };
            tx.switch_to(&row.source_record_id);
            if tx.already_processed(&ev.event_id).await? {
                continue;
            }
            let side = if ev.system == rule.source.system {
                Side::Source
            } else {
                Side::Target
            };
            let known = load(&mut tx, rule).await?;
            let mut entries = vec![];
            let decision = match self
                .decide(rule, side, &row.source_record_id, &ev, &known, &mut entries)
                .await
            {
                Ok(d) => d,
                Err(Failure::Connector(e)) if classify::connector(&e) == Action::Conflict => {
                    Decision::Flow(rejected(rule, &e, &mut entries))
                }
                // The batch rolls back: everything is parked again, as it was.
                Err(e) => return Err(e),
            };
            items.push(Item {
                ev,
                record_id: row.source_record_id.clone(),
                entries,
                decision: Some(decision),
                bulk_ops: vec![],
            });
        }

        // Updates of linked records in bulk, where the target has a bulk endpoint.
        if let Some(max) = bulk_max {
            let updates: Vec<usize> = items
                .iter()
                .enumerate()
                .filter(|(_, it)| matches!(&it.decision, Some(Decision::Planned(p)) if p.target_id.is_some() && !p.target_fields.is_empty()))
                .map(|(i, _)| i)
                .collect();
            for chunk in updates.chunks(max) {
                let batch: Vec<(String, Fields)> = chunk
                    .iter()
                    .filter_map(|i| match &items[*i].decision {
                        Some(Decision::Planned(p)) => {
                            Some((p.target_id.clone()?, p.target_fields.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                let limited = self.limiter.limit(&target);
                let key = format!("{}:bulk:{}", rule.name, uuid::Uuid::new_v4());
                match limited.call(|api| api.bulk_update(&batch, &key)).await {
                    Ok(outcomes) => {
                        for ((i, (target_id, fields)), outcome) in
                            chunk.iter().zip(&batch).zip(outcomes)
                        {
                            let item = &mut items[*i];
                            // One the answer did not confirm is written on its own
                            // below, where a refusal becomes that record's conflict.
                            if let Err(why) = outcome {
                                tracing::warn!(target_id, reason = %why, "a bulk update did not confirm this record; writing it on its own");
                                item.entries.push(Entry::bulk_unconfirmed(
                                    target.system(),
                                    target_id,
                                    &why,
                                ));
                                continue;
                            }
                            item.entries.push(Entry::updated_in_bulk(
                                target.system(),
                                target_id,
                                fields,
                                batch.len(),
                            ));
                            if let Some(Decision::Planned(p)) = &mut item.decision {
                                let vv = serde_json::to_value(&p.state.vv).unwrap_or_default();
                                wrote(&mut p.state, &rule.target.system, fields, None);
                                item.bulk_ops.push(Op {
                                    system: rule.target.system.clone(),
                                    key: key.clone(),
                                    fields: fields.clone(),
                                    vv,
                                    intent: None,
                                    created: None,
                                    // A bulk answer says nothing record by record.
                                    dropped: None,
                                });
                                p.target_fields = Fields::new();
                            }
                        }
                    }
                    // One record's data is refused: write them one by one, so that only
                    // that record becomes a conflict.
                    Err(Failure::Connector(e)) if classify::connector(&e) == Action::Conflict => {
                        tracing::warn!(error = %e, "a bulk update was refused; writing its records one by one");
                    }
                    Err(e) => return Err(e),
                }
            }
        }

        let mut flushed = 0;
        for item in items {
            let Item {
                ev,
                record_id,
                mut entries,
                decision,
                bulk_ops,
            } = item;
            let evref = EventRef {
                event_id: ev.event_id.clone(),
                correlation_id: ev.correlation_id.clone(),
            };
            tx.switch_to(&record_id);
            let flow = match decision.expect("every item has a decision") {
                Decision::Flow(flow) => flow,
                Decision::Gone {
                    gone,
                    record_id,
                    target_id,
                } => {
                    let result = self
                        .gone(rule, &mut tx, gone, &record_id, &target_id, &mut entries)
                        .await;
                    settle(rule, result, &mut entries)?
                }
                Decision::Planned(planned) => {
                    let result = async {
                        let (planned, mut ops) = self
                            .perform(rule, &ev, &mut tx, *planned, &mut entries)
                            .await?;
                        ops.splice(0..0, bulk_ops);
                        self.finish_write(rule, (planned, ops), &mut entries).await
                    }
                    .await;
                    // Any other failure drops the batch: everything stays parked.
                    settle(rule, result, &mut entries)?
                }
            };
            let received =
                Entry::webhook_received(&ev.system, ev.work.event_type(), &ev.event_id, 1);
            finish(&mut tx, &evref, received, entries, flow).await?;
            flushed += 1;
        }
        tx.commit().await?;
        Ok(flushed.max(parked.len()))
    }
}
