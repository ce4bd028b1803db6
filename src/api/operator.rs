//! The `Operator` service (this hotline's analysts and operators).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::convert::{case_to_pb, priority_from_pb, route_to_pb};
use crate::api::{auth, status::to_status};
use crate::node::{Core, cases, intake};
use crate::pb;
use crate::report::validate::Submission;
use crate::report::{Direction, MediaHash};

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
        let submission = Submission {
            urls: &r.urls,
            category: &r.category,
            hosting_ip: &r.hosting_ip,
            priority: priority_from_pb(r.priority),
            notes: &r.notes,
            hashes: r
                .hashes
                .iter()
                .map(|h| MediaHash {
                    algorithm: h.algorithm.clone(),
                    value: h.value.clone(),
                })
                .collect(),
        };
        let done = intake::submit(&self.core, &operator, submission)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::SubmitReportResponse {
            report_id: done.report_id,
            route: Some(route_to_pb(&done.route)),
            case: done.case.as_ref().map(case_to_pb),
        }))
    }

    async fn route(
        &self,
        request: Request<pb::RouteRequest>,
    ) -> Result<Response<pb::RouteDecision>, Status> {
        let _permit = auth::operator(&self.core, &request).await?;
        let r = request.get_ref();
        intake::route_preview(&self.core, &r.urls, &r.hosting_ip, &r.category)
            .map(|d| Response::new(route_to_pb(&d)))
            .map_err(to_status)
    }

    async fn get_case(
        &self,
        request: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let _permit = auth::operator(&self.core, &request).await?;
        cases::get(&self.core, &request.get_ref().id)
            .await
            .map(|c| Response::new(case_to_pb(&c)))
            .map_err(to_status)
    }

    async fn list_cases(
        &self,
        request: Request<pb::ListCasesRequest>,
    ) -> Result<Response<pb::ListCasesResponse>, Status> {
        let _permit = auth::operator(&self.core, &request).await?;
        let r = request.get_ref();
        let direction = match r.direction.as_str() {
            "" => None,
            d => Some(Direction::parse(d).ok_or_else(|| {
                Status::invalid_argument("direction must be incoming, outgoing or local")
            })?),
        };
        let list = cases::list(&self.core, direction, r.limit)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListCasesResponse {
            cases: list.iter().map(case_to_pb).collect(),
        }))
    }

    async fn update_case(
        &self,
        request: Request<pb::UpdateCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let (operator, _permit) = auth::operator(&self.core, &request).await?;
        let r = request.get_ref();
        cases::update(&self.core, &operator, &r.id, &r.status, &r.reason)
            .await
            .map(|c| Response::new(case_to_pb(&c)))
            .map_err(to_status)
    }

    async fn make_checkpoint(
        &self,
        request: Request<pb::MakeCheckpointRequest>,
    ) -> Result<Response<pb::CheckpointNote>, Status> {
        let _permit = auth::operator(&self.core, &request).await?;
        let cp = crate::node::checkpoint::make(&self.core)
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
            .map_err(|e| Status::failed_precondition(format!("{e:#}")))?;
        Ok(Response::new(pb::ReloadResponse {}))
    }
}
