//! Notifications: outgoing email today; the outbox, signed webhooks and events grow here.
//!
//! Modules send mail through the [`Mailer`] trait (one sender per process, built from
//! `smtp.*` configuration), never through lettre directly.

mod mail;

pub use mail::{
    DEFAULT_MAIL_DIR, Email, FileMailer, MailError, Mailer, ReceivedEmail, SmtpMailer, mailer,
    read_mail_dir,
};
