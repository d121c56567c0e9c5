"""The texts of this domain's error codes (registered with policy_server.errors, so that
KalkanError.in_language says them in the reader's language)."""

from policy_server.errors import register_error_texts
from policy_server.web.i18n import N_

ERROR_TEXTS = {
    'backup.not_configured': N_('Scheduled backups are off. Set KALKAN_BACKUP_DIR (see docs/operations.md).'),
    'backup.none': N_('No backup has been made in the backup folder yet.'),
    'install.no_package': N_(
        'No agent package on this server yet. Copy kalkan-agent_<version>_amd64.deb into '
        "the server's package folder (see docs/operations.md)."),
    'install.repo_unavailable': N_("The server cannot make its agent repository now (see the server's log): "
                                   'a broken package file in its package folder, or gpg is missing.'),
    'install.no_certificate': N_('This server runs without TLS, so it has no certificate for the seats. '
                                 'Start it with TLS (the default).'),
}

register_error_texts(ERROR_TEXTS)
