//! The `Federation` service (node to node).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::{auth, status::to_status};
use crate::node::{Core, receive};
use crate::pb;

pub struct FederationService {
    pub core: Arc<Core>,
}

#[tonic::async_trait]
impl pb::federation_server::Federation for FederationService {
    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        let sender = auth::node(&self.core, &request)?;
        receive::forward(&self.core, &sender, request.get_ref())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn push_status(
        &self,
        request: Request<pb::PushStatusRequest>,
    ) -> Result<Response<pb::PushStatusResponse>, Status> {
        let sender = auth::node(&self.core, &request)?;
        receive::push_status(&self.core, &sender, request.get_ref())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn node_info(
        &self,
        request: Request<pb::NodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfoResponse>, Status> {
        auth::node(&self.core, &request)?;
        let me = self.core.config.directory.node(&self.core.me);
        Ok(Response::new(pb::NodeInfoResponse {
            node_id: self.core.me.to_string(),
            countries: me.map(|n| n.countries.clone()).unwrap_or_default(),
            key_ids: vec![self.core.key.key_id().to_owned()],
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }
}
