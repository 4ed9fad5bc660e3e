//! STUB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalSignal {
    Bell,
    Notify(String),
    Title(String),
    Progress { state: u8, percent: Option<u8> },
}
#[derive(Debug, Default)]
pub struct TerminalScanner;
impl TerminalScanner {
    pub fn new() -> Self {
        TerminalScanner
    }
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<TerminalSignal>) {
        if bytes.contains(&7) {
            out.push(TerminalSignal::Bell)
        }
    }
}
