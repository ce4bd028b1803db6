//! The `Operator` service (this hotline's analysts and operators).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::convert::{case_to_pb, route_to_pb};
use crate::api::{auth, status::to_status};
use crate::node::{Core, amend, cases, intake};
use crate::pb;
use crate::report::Direction;

type Filter = (
    Option<&'static str>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<&'static str>,
    Option<String>,
);

/// The case-list filters, checked: direction, status, category, peer,
/// priority.
fn list_filter(r: &pb::ListCasesRequest) -> Result<Filter, crate::report::InvalidInput> {
    use crate::report::InvalidInput;
    let direction = match r.direction.as_str() {
        "" => None,
        d => Some(
            Direction::parse(d)
                .ok_or_else(|| {
                    InvalidInput::new(
                        "bad-filter",
                        "direction",
                        "must be incoming, outgoing, local or relayed",
                    )
                })?
                .as_str(),
        ),
    };
    let opt = |s: &str| (!s.is_empty()).then_some(s.to_owned());
    let status = opt(&r.status);
    if let Some(st) = &status
        && crate::report::CaseStatus::parse(st).is_err()
        && !["queued", "delivered", "refused", "no-hotline", "held"].contains(&st.as_str())
    {
        return Err(InvalidInput::new(
            "bad-filter",
            "status",
            "is not a case status or a delivery state",
        ));
    }
    let category = opt(&r.category);
    if let Some(c) = &category {
        crate::report::Category::parse(c)
            .map_err(|e| InvalidInput::new("bad-filter", "category", e.message))?;
    }
    let peer = opt(&r.peer);
    if let Some(p) = &peer {
        crate::identity::NodeId::new(p)
            .map_err(|e| InvalidInput::new("bad-filter", "peer", e.to_string()))?;
    }
    let priority = match r.priority {
        0 => None,
        p => Some(
            crate::api::convert::priority_from_pb(p)
                .ok_or_else(|| {
                    InvalidInput::new("bad-filter", "priority", "not one of: bulk, urgent")
                })?
                .as_str(),
        ),
    };
    let family = opt(&r.family);
    if let Some(f) = &family {
        crate::report::validate::report_id(f).map_err(|_| {
            InvalidInput::new(
                "bad-filter",
                "family",
                "1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'",
            )
        })?;
    }
    Ok((direction, status, category, peer, priority, family))
}

pub struct OperatorService {
    pub core: Arc<Core>,
}

#[tonic::async_trait]
impl pb::operator_server::Operator for OperatorService {
    async fn submit_report(
        &self,
        request: Request<pb::SubmitReportRequest>,
    ) -> Result<Response<pb::SubmitReportResponse>, Status> {
        let (operator, _permit) = auth::operator(&self.core, &request).await?;
        let r = request.into_inner();
        let submission = crate::api::convert::submission(&r);
        let done = intake::submit(&self.core, &operator, submission, &r.submission_id)
            .await
            .map_err(to_status)?;
        crate::api::trace::report_id(&done.report_id);
        Ok(Response::new(pb::SubmitReportResponse {
            report_id: done.report_id,
            route: Some(done.route),
            case: done.case.as_ref().map(case_to_pb),
            repeat: done.repeat,
        }))
    }

    type SubmitReportsStream = std::pin::Pin<
        Box<
            dyn tokio_stream::Stream<Item = Result<pb::SubmitReportsResponse, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn submit_reports(
        &self,
        request: Request<tonic::Streaming<pb::SubmitReportRequest>>,
    ) -> Result<Response<Self::SubmitReportsStream>, Status> {
        // One admission for the whole stream: its permit is held until the
        // stream ends.
        let (operator, permit) = auth::operator(&self.core, &request).await?;
        let mut inbound = request.into_inner();
        // A reader buffers what the client sends while a group commits; the
        // committer takes whatever has arrived (up to a group) each time.
        let (in_tx, mut in_rx) = tokio::sync::mpsc::channel::<
            Result<pb::SubmitReportRequest, Status>,
        >(4 * intake::BULK_GROUP);
        tokio::spawn(async move {
            loop {
                let next = match inbound.message().await {
                    Ok(Some(m)) => Ok(m),
                    Ok(None) => break,
                    Err(status) => Err(status),
                };
                let stop = next.is_err();
                if in_tx.send(next).await.is_err() || stop {
                    break;
                }
            }
        });
        let (out_tx, out_rx) = tokio::sync::mpsc::channel(4 * intake::BULK_GROUP);
        let core = self.core.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut index = 0u64;
            let mut group = Vec::with_capacity(intake::BULK_GROUP);
            while let Some(first) = in_rx.recv().await {
                let mut ended = None;
                let mut next = Some(first);
                while let Some(m) = next.take() {
                    match m {
                        Ok(m) => group.push(m),
                        Err(status) => {
                            ended = Some(status);
                            break;
                        }
                    }
                    if group.len() < intake::BULK_GROUP {
                        next = in_rx.try_recv().ok();
                    }
                }
                if !group.is_empty() {
                    let answers =
                        match intake::submit_many(&core, &operator, std::mem::take(&mut group))
                            .await
                        {
                            Ok(a) => a,
                            Err(e) => {
                                let _ = out_tx.send(Err(to_status(e))).await;
                                return;
                            }
                        };
                    for answer in answers {
                        let response = match answer {
                            Ok(s) => pb::SubmitReportsResponse {
                                index,
                                code: 0,
                                message: if s.repeat { "repeat" } else { "stored" }.into(),
                                report_id: s.report_id,
                                route: Some(s.route),
                                repeat: s.repeat,
                            },
                            Err(e) => {
                                let status = to_status(e);
                                pb::SubmitReportsResponse {
                                    index,
                                    code: status.code() as i32,
                                    message: status.message().to_owned(),
                                    ..Default::default()
                                }
                            }
                        };
                        index += 1;
                        if out_tx.send(Ok(response)).await.is_err() {
                            return;
                        }
                    }
                }
                if let Some(status) = ended {
                    let _ = out_tx.send(Err(status)).await;
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx),
        )))
    }

    async fn route(
        &self,
        request: Request<pb::RouteRequest>,
    ) -> Result<Response<pb::RouteDecision>, Status> {
        let _permit = auth::operator(&self.core, &request).await?;
        let r = request.get_ref();
        crate::node::route::route_preview(
            &self.core,
            &r.urls,
            &r.hosting_ip,
            &r.category,
            &r.classification,
        )
        .await
        .map(|d| Response::new(route_to_pb(&d)))
        .map_err(to_status)
    }

    async fn get_case(
        &self,
        request: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let (operator, _permit) = auth::operator(&self.core, &request).await?;
        crate::api::trace::report_id(&request.get_ref().id);
        let case = cases::get(&self.core, &request.get_ref().id)
            .await
            .map_err(to_status)?;
        // Every look at a case is recorded, before it is shown.
        cases::audit_read(
            &self.core,
            &operator,
            "case.read",
            cases::subject(&case),
            serde_json::json!({"rpc": "GetCase"}),
        )
        .await
        .map_err(to_status)?;
        Ok(Response::new(case_to_pb(&case)))
    }

    async fn list_cases(
        &self,
        request: Request<pb::ListCasesRequest>,
    ) -> Result<Response<pb::ListCasesResponse>, Status> {
        let (operator, _permit) = auth::operator(&self.core, &request).await?;
        let r = request.get_ref();
        // A bad filter is refused like any bad input: INVALID_ARGUMENT
        // naming the field, and an audit entry with its reason code.
        let (direction, status, category, peer, priority, family) = match list_filter(r) {
            Ok(f) => f,
            Err(e) => {
                use prost::Message;
                self.core
                    .audit_refusal(
                        &operator.to_string(),
                        e.code,
                        &e.to_string(),
                        &r.encode_to_vec(),
                    )
                    .await;
                return Err(to_status(e.into()));
            }
        };
        let created_after_ms = (r.max_age_secs > 0).then(|| {
            crate::node::Core::now_ms().saturating_sub(
                i64::try_from(r.max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            )
        });
        let filter = crate::store::CaseFilter {
            direction,
            status: status.as_deref(),
            category: category.as_deref(),
            priority,
            peer: peer.as_deref(),
            created_after_ms,
            family: family.as_deref(),
            limit: i64::from(r.limit),
        };
        let list = cases::list(&self.core, &filter).await.map_err(to_status)?;
        // One entry per request, naming the filter and every case shown.
        cases::audit_read(
            &self.core,
            &operator,
            "case.read",
            String::new(),
            serde_json::json!({
                "rpc": "ListCases",
                "filter": {
                    "direction": filter.direction,
                    "status": filter.status,
                    "category": filter.category,
                    "priority": filter.priority,
                    "peer": filter.peer,
                    "family": filter.family,
                    "max_age_secs": r.max_age_secs,
                    "limit": r.limit,
                },
                "count": list.len(),
                "cases": list.iter().map(cases::subject).collect::<Vec<_>>(),
            }),
        )
        .await
        .map_err(to_status)?;
        Ok(Response::new(pb::ListCasesResponse {
            cases: list.iter().map(case_to_pb).collect(),
        }))
    }

    type WatchCasesStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::Case, Status>> + Send + 'static>,
    >;

    async fn watch_cases(
        &self,
        request: Request<pb::WatchCasesRequest>,
    ) -> Result<Response<Self::WatchCasesStream>, Status> {
        // The permit covers opening the stream; a watching analyst does not
        // hold one of the caller's in-flight slots for hours.
        let (operator, _permit) = auth::operator(&self.core, &request).await?;
        let direction = request.get_ref().direction.clone();
        if !direction.is_empty() && Direction::parse(&direction).is_none() {
            let e = crate::report::InvalidInput::new(
                "bad-filter",
                "direction",
                "must be incoming, outgoing, local or relayed",
            );
            use prost::Message;
            self.core
                .audit_refusal(
                    &operator.to_string(),
                    e.code,
                    &e.to_string(),
                    &request.get_ref().encode_to_vec(),
                )
                .await;
            return Err(to_status(e.into()));
        }
        // The watch shows every new or changed case matching its filter
        // from now on: recorded once, when it opens, with the filter.
        cases::audit_read(
            &self.core,
            &operator,
            "case.read",
            String::new(),
            serde_json::json!({"rpc": "WatchCases", "filter": {"direction": direction}}),
        )
        .await
        .map_err(to_status)?;
        let mut events = self.core.case_events.subscribe();
        let core = self.core.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let seq = match events.recv().await {
                    Ok(seq) => seq,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::resource_exhausted(format!(
                                "this watcher fell {n} changes behind; list the cases, then watch again"
                            ))))
                            .await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Ok(case) = cases::view_by_seq(&core, seq).await else {
                    continue;
                };
                if !direction.is_empty() && case.direction != direction {
                    continue;
                }
                if tx.send(Ok(case_to_pb(&case))).await.is_err() {
                    return; // the analyst went away
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn update_case(
        &self,
        request: Request<pb::UpdateCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let (operator, _permit) = auth::operator(&self.core, &request).await?;
        let r = request.get_ref();
        crate::api::trace::report_id(&r.id);
        let referral = cases::Referral {
            agency: &r.agency,
            reference: &r.reference,
            referred_at_ms: r.referred_at_ms,
        };
        let done = if r.reject_proposal {
            crate::node::second::reject(&self.core, &operator, &r.id, &r.reason).await
        } else if r.propose {
            crate::node::second::propose(&self.core, &operator, &r.id, &r.status, &r.reason).await
        } else {
            cases::update(
                &self.core, &operator, &r.id, &r.status, &r.reason, &referral,
            )
            .await
        };
        done.map(|c| Response::new(case_to_pb(&c)))
            .map_err(to_status)
    }

    async fn hand_off_case(
        &self,
        request: Request<pb::HandOffCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let (operator, _permit) = auth::operator(&self.core, &request).await?;
        let r = request.get_ref();
        let handed = if r.resolve_again {
            let named = !r.to.is_empty() || !r.hosting_ip.is_empty();
            crate::node::handoff::reroute(&self.core, &operator, &r.id, &r.reason, named).await
        } else {
            crate::node::handoff::hand_off(
                &self.core,
                &operator,
                &r.id,
                &r.to,
                &r.hosting_ip,
                &r.reason,
            )
            .await
        };
        handed
            .map(|c| Response::new(case_to_pb(&c)))
            .map_err(to_status)
    }

    async fn retract_report(
        &self,
        request: Request<pb::RetractReportRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let (operator, _permit) = auth::operator(&self.core, &request).await?;
        let r = request.get_ref();
        amend::amend(
            &self.core,
            &operator,
            &r.id,
            amend::Change::Retract,
            &r.reason,
        )
        .await
        .map(|c| Response::new(case_to_pb(&c)))
        .map_err(to_status)
    }

    async fn correct_report(
        &self,
        request: Request<pb::CorrectReportRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let (operator, _permit) = auth::operator(&self.core, &request).await?;
        let r = request.get_ref();
        let change = amend::Change::Correct {
            category: r.category.clone(),
            hashes: r
                .hashes
                .iter()
                .map(|h| crate::report::MediaHash {
                    algorithm: h.algorithm.clone(),
                    value: h.value.clone(),
                })
                .collect(),
            notes: r.notes.clone(),
        };
        amend::amend(&self.core, &operator, &r.id, change, &r.reason)
            .await
            .map(|c| Response::new(case_to_pb(&c)))
            .map_err(to_status)
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let _permit = auth::operator(&self.core, &request).await?;
        let window_ms = match request.get_ref().window_secs {
            0 => crate::node::stats::DEFAULT_WINDOW_MS,
            s => i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX / 2),
        };
        let rows = crate::node::stats::compute(&self.core, window_ms)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::StatsResponse {
            window_secs: (window_ms / 1000) as u64,
            rows: rows
                .into_iter()
                .map(|r| pb::StatsRow {
                    dimension: r.dimension.to_owned(),
                    key: r.key,
                    milestone: r.milestone.to_owned(),
                    count: r.count,
                    p50_ms: r.p50_ms,
                    p90_ms: r.p90_ms,
                    of: r.of,
                })
                .collect(),
        }))
    }

    async fn make_checkpoint(
        &self,
        request: Request<pb::MakeCheckpointRequest>,
    ) -> Result<Response<pb::CheckpointNote>, Status> {
        // Admin only; a new one (the whole log read again) a few at a time.
        let (admin, _permit) = auth::admin(&self.core, &request).await?;
        let cp = crate::node::checkpoint::make_verified(&self.core, &admin.to_string())
            .await
            .map_err(to_status)?;
        let note = crate::node::checkpoint::with_cosignatures(&self.core, &cp)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CheckpointNote { note }))
    }

    async fn list_peers(
        &self,
        request: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        let _permit = auth::operator(&self.core, &request).await?;
        let peers = crate::node::overview::peers(&self.core)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListPeersResponse {
            peers: peers.iter().map(crate::api::convert::peer_to_pb).collect(),
        }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        let _permit = auth::operator(&self.core, &request).await?;
        crate::node::overview::summary(&self.core)
            .await
            .map(|s| Response::new(crate::api::convert::summary_to_pb(&s)))
            .map_err(to_status)
    }

    async fn reload(
        &self,
        request: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        let (admin, _permit) = auth::admin(&self.core, &request).await?;
        self.core
            .reload(&admin.to_string())
            .await
            .map_err(crate::api::status::reload_refused)?;
        Ok(Response::new(pb::ReloadResponse {}))
    }

    async fn export_case(
        &self,
        request: Request<pb::ExportCaseRequest>,
    ) -> Result<Response<pb::CaseExport>, Status> {
        let (operator, _permit) = auth::operator(&self.core, &request).await?;
        let r = request.get_ref();
        let bundle = crate::node::export::case_bundle(&self.core, &operator, &r.id, &r.purpose)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CaseExport { bundle }))
    }

    async fn run_retention(
        &self,
        request: Request<pb::RunRetentionRequest>,
    ) -> Result<Response<pb::RunRetentionResponse>, Status> {
        use crate::node::retention::{self, Writer};
        let (admin, _permit) = auth::admin(&self.core, &request).await?;
        let core = &self.core;
        if !core.config.retention.any() {
            return Err(Status::failed_precondition(
                "no [retention] period is configured: nothing can expire",
            ));
        }
        let actor = admin.to_string();
        let ask = retention::Ask {
            actor: &actor,
            subject: core.me.as_str(),
            dry_run: request.get_ref().dry_run,
            audit_if_empty: true,
            now_ms: crate::node::Core::now_ms(),
            // A short call, whatever the backlog: the caller asks again.
            budget: Some(retention::CALL_BUDGET),
        };
        let run = retention::run_within(Writer::Node(core), &core.config.retention, &ask)
            .await
            .map_err(|e| to_status(e.into()))?;
        Ok(Response::new(crate::api::convert::retention_to_pb(&run)))
    }

    async fn erase_case(
        &self,
        request: Request<pb::EraseCaseRequest>,
    ) -> Result<Response<pb::EraseCaseResponse>, Status> {
        use crate::node::retention::{self, Writer};
        let (admin, _permit) = auth::admin(&self.core, &request).await?;
        let r = request.get_ref();
        let core = &self.core;
        let now = crate::node::Core::now_ms();
        let result = retention::erase(
            Writer::Node(core),
            &r.id,
            &admin.to_string(),
            &r.reason,
            now,
        )
        .await;
        let fields: [&[u8]; 3] = [b"erase", r.id.as_bytes(), r.reason.as_bytes()];
        let erased = core
            .audit_if_refused(&admin, "invalid-erasure", &fields, result)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::EraseCaseResponse {
            erased: erased.erased,
            audit_entry: erased.audit_entry,
            files_clean: erased.files_clean,
        }))
    }

    async fn manage_users(
        &self,
        request: Request<pb::ManageUsersRequest>,
    ) -> Result<Response<pb::ManageUsersResponse>, Status> {
        use crate::node::users::{self, Change};
        let (admin, _permit) = auth::admin(&self.core, &request).await?;
        let r = request.get_ref();
        let core = &self.core;
        let one = |u: users::UserView| pb::ManageUsersResponse {
            users: vec![crate::api::convert::user_to_pb(u)],
            ..Default::default()
        };
        let enrolment = |e: users::Enrolment| pb::ManageUsersResponse {
            users: Vec::new(),
            enrolment_code: e.code,
            enrol_expires_ms: e.expires_at_ms,
        };
        let answer = match r.action.as_str() {
            "add" => users::add(core, &admin, &r.name, &r.role)
                .await
                .map(enrolment),
            "reset" => users::reset(core, &admin, &r.name).await.map(enrolment),
            "disable" => users::change(core, &admin, &r.name, Change::Disable)
                .await
                .map(one),
            "unlock" => users::change(core, &admin, &r.name, Change::Unlock)
                .await
                .map(one),
            "list" => users::list(core, &admin)
                .await
                .map(|l| pb::ManageUsersResponse {
                    users: l.into_iter().map(crate::api::convert::user_to_pb).collect(),
                    ..Default::default()
                }),
            _ => {
                let e = crate::report::InvalidInput::new(
                    "bad-user",
                    "action",
                    "must be add, list, disable, reset or unlock",
                );
                core.audit_refusal(&admin.to_string(), e.code, &e.to_string(), &[])
                    .await;
                Err(e.into())
            }
        };
        answer.map(Response::new).map_err(to_status)
    }
}
