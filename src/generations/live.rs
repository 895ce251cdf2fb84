//! The live generation as readers and the writer see it: its graph, its
//! projector set and fingerprint, behind one pointer that the writer swaps
//! right after the batch that made another generation live. A reader takes
//! the pointer once per request, so it reads one generation only.

use crate::digest::Sha256;
use crate::graph::GraphStore;
use crate::projection::ProjectorSet;
use std::sync::{Arc, RwLock};

/// One generation, live (its id is `graph.generation()`).
pub struct Live {
    pub graph: GraphStore,
    pub projectors: Arc<ProjectorSet>,
    pub fingerprint: Sha256,
}

/// The shared handle on the live generation. Cheap to clone.
#[derive(Clone)]
pub struct LiveGraph(Arc<RwLock<Arc<Live>>>);

impl LiveGraph {
    pub fn new(live: Live) -> LiveGraph {
        LiveGraph(Arc::new(RwLock::new(Arc::new(live))))
    }

    /// The live generation now. Hold the `Arc` for the whole request: the
    /// generation it names stays readable (its keyspaces are deleted only
    /// once no request holds it).
    pub fn get(&self) -> Arc<Live> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The live generation's graph now.
    pub fn graph(&self) -> GraphStore {
        self.get().graph.clone()
    }

    /// Makes `new` the live generation; returns the previous one.
    pub(crate) fn replace(&self, new: Arc<Live>) -> Arc<Live> {
        match self.0.write() {
            Ok(mut g) => std::mem::replace(&mut *g, new),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), new),
        }
    }
}
