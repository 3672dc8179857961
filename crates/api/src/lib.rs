//! `reins-api` holds the types that cross a wire: the public `/v1` API
//! ([`v1`], [`agent`]) with OpenAPI schemas, and the node protocol between the control
//! plane and execution nodes ([`node`]). No I/O lives here.

pub mod agent;
pub mod node;
pub mod v1;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code, such as `not_found` or `quota_exceeded`.
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
}
