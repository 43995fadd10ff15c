//! Which profile judges which job: one profile for every job, or a configuration file's
//! choices per repository and workflow ([`ProfileSet`]), and where they are read from
//! ([`ProfileSource`]: the agent's SIGHUP reload and the runner hook that asks whether to fail
//! closed read through it; the agent's start reads the configuration file once for both its
//! settings and its profiles).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{wildcard_match, Profile, ProfileError};
use crate::ci::JobIdentity;

/// Which jobs a profile is for: every given field must match (`*` wildcards).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileChoice {
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub workflow: Option<String>,
    /// The profile file (relative paths are from the configuration file's directory).
    pub profile: PathBuf,
}

impl ProfileChoice {
    pub(crate) fn matches(&self, job: &JobIdentity) -> bool {
        let field = |want: &Option<String>, have: &Option<String>| match want {
            None => true,
            Some(w) => have.as_deref().is_some_and(|h| wildcard_match(w, h)),
        };
        field(&self.repository, &job.repository) && field(&self.workflow, &job.workflow)
    }
}

/// The profiles in force: one per job, chosen by the job's identity.
#[derive(Debug, Clone)]
pub struct ProfileSet {
    pub default: Profile,
    pub chosen: Vec<(ProfileChoice, Profile)>,
}

impl ProfileSet {
    pub fn single(profile: Profile) -> Self {
        Self {
            default: profile,
            chosen: Vec::new(),
        }
    }

    pub fn for_job(&self, job: &JobIdentity) -> &Profile {
        self.chosen
            .iter()
            .find(|(choice, _)| choice.matches(job))
            .map(|(_, p)| p)
            .unwrap_or(&self.default)
    }

    /// Whether a configuration entry picks this job by its repository.
    pub fn names_repository(&self, job: &JobIdentity) -> bool {
        self.chosen
            .iter()
            .any(|(choice, _)| choice.repository.is_some() && choice.matches(job))
    }

    /// Every profile (for what must hold for all of them, like block mode).
    pub fn all(&self) -> impl Iterator<Item = &Profile> {
        std::iter::once(&self.default).chain(self.chosen.iter().map(|(_, p)| p))
    }
}

/// Where the profiles in force are read from (and read again on SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileSource {
    /// The built-in profile (profiles/default.yml): nothing to read again.
    BuiltIn,
    /// One profile file for every job (`monitor run --profile`).
    Profile(PathBuf),
    /// A configuration file and the profiles it names (`monitor run --config`).
    Config(PathBuf),
}

impl ProfileSource {
    /// Reads the profiles; every error says where (`file:line:column: problem`).
    pub fn load(&self) -> Result<ProfileSet, ProfileError> {
        match self {
            ProfileSource::BuiltIn => Ok(ProfileSet::single(Profile::default_profile())),
            ProfileSource::Profile(path) => Profile::load(path).map(ProfileSet::single),
            ProfileSource::Config(path) => crate::config::Config::load_profiles(path),
        }
    }

    /// The file read, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ProfileSource::BuiltIn => None,
            ProfileSource::Profile(p) | ProfileSource::Config(p) => Some(p),
        }
    }
}
