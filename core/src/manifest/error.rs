//! What can be wrong with manifests: every problem of a run, each with its place.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode, SourceSpan};

/// A place in a manifest: 1-based line and column, as editors count them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Position {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem in the manifests.
#[derive(Clone, Debug)]
pub struct Problem {
    /// The file (or, for a path that cannot be read, the path as given).
    pub file: PathBuf,
    /// Where in the file; `None` when the problem is about the file as a whole.
    pub position: Option<Position>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub help: String,
    /// The other place involved (the first occurrence of a duplicate, the first `app` block).
    pub other: Option<(PathBuf, Position)>,
    /// The file's text and the byte span, for a code frame.
    pub(crate) source: Option<(NamedSource<Arc<str>>, SourceSpan)>,
    /// The index of the file in load order, to report problems in file order.
    pub(crate) file_index: usize,
}

impl Problem {
    pub(crate) fn whole_file(
        file_index: usize,
        file: &Path,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Self {
        Problem {
            file: file.to_owned(),
            position: None,
            message: message.into(),
            help: help.into(),
            other: None,
            source: None,
            file_index,
        }
    }

    /// `file:line:column`, or only `file` when there is no position.
    pub fn place(&self) -> String {
        match self.position {
            Some(p) => format!("{}:{p}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }

    /// A GitHub Actions workflow command that annotates the place with the problem.
    pub fn github_annotation(&self) -> String {
        let mut props = format!("file={}", escape_property(&self.file.display().to_string()));
        if let Some(p) = self.position {
            props.push_str(&format!(",line={},col={}", p.line, p.column));
        }
        props.push_str(",title=timctl manifest");
        let text = match &self.other {
            Some((file, p)) => format!(
                "{} (the other place: {}:{p}) Help: {}",
                self.message,
                file.display(),
                self.help
            ),
            None => format!("{} Help: {}", self.message, self.help),
        };
        format!("::error {props}::{}", escape_data(&text))
    }

    /// Attaches the file's text, so that the problem renders with a code frame.
    pub(crate) fn attach_source(&mut self, text: &Arc<str>) {
        if let Some(pos) = self.position {
            let offset = super::offset_of(text, pos);
            self.source = Some((
                NamedSource::new(self.file.display().to_string(), Arc::clone(text))
                    .with_language("YAML"),
                SourceSpan::from((offset, 0)),
            ));
        }
    }
}

// GitHub's workflow command escaping: data escapes %, CR and LF; properties also `:` and `,`.
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

impl serde::Serialize for Problem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        #[derive(serde::Serialize)]
        struct Other<'a> {
            file: String,
            line: u32,
            column: u32,
            #[serde(skip)]
            _p: std::marker::PhantomData<&'a ()>,
        }
        let mut st = s.serialize_struct("Problem", 6)?;
        st.serialize_field("file", &self.file.display().to_string())?;
        st.serialize_field("line", &self.position.map(|p| p.line))?;
        st.serialize_field("column", &self.position.map(|p| p.column))?;
        st.serialize_field("message", &self.message)?;
        st.serialize_field("help", &self.help)?;
        st.serialize_field(
            "other",
            &self.other.as_ref().map(|(f, p)| Other {
                file: f.display().to_string(),
                line: p.line,
                column: p.column,
                _p: std::marker::PhantomData,
            }),
        )?;
        st.end()
    }
}

/// The message; prefixed with the place only when there is no code frame to name it, so that
/// a problem shows its place once.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            Some(_) => f.write_str(&self.message),
            None => write!(f, "{}: {}", self.place(), self.message),
        }
    }
}

impl std::error::Error for Problem {}

// No diagnostic code: the message already names the file, line and column, and a code line
// above every problem (and above their summary) only made the report harder to read.
impl Diagnostic for Problem {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(&self.help))
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|(s, _)| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let (_, span) = self.source.as_ref()?;
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some("here".to_owned()),
            *span,
        ))))
    }
}

/// Every problem found in the manifests of one run, in file order. Loading reports all of
/// them rather than stopping at the first, so that one run of `timctl validate` shows
/// everything to fix.
#[derive(Clone, Debug)]
pub struct ManifestErrors {
    pub(super) problems: Vec<Problem>,
}

impl ManifestErrors {
    pub(crate) fn new(mut problems: Vec<Problem>) -> Self {
        problems.sort_by(|a, b| {
            (a.file_index, a.position, &a.message).cmp(&(b.file_index, b.position, &b.message))
        });
        ManifestErrors { problems }
    }

    /// The problems, in file order and then by place.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.len() {
            1 => write!(f, "the manifests have 1 problem"),
            n => write!(f, "the manifests have {n} problems"),
        }
    }
}

impl std::error::Error for ManifestErrors {}

impl Diagnostic for ManifestErrors {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(
            "fix each problem below; `timctl validate` checks the manifests without touching anything",
        ))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(self.problems.iter().map(|p| p as &dyn Diagnostic)))
    }
}
