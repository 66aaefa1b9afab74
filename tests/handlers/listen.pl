#!/usr/bin/env perl
# listen.pl: a handler in the original daemon's style, for the broker's integration tests
# (configured with connect = PATH, correlate = "connection"). It listens on its own Unix socket
# ($BESTER_SOCKET); for every connection the broker makes it reads one frame, writes one answer in
# the original form (status "0", no request token), closes, and accepts again. One connection at a
# time, like the original handlers.
#
# payload.data decides what it does:
#   {"action":"eof"} -> close without answering (the broker answers handler_unavailable)
#   anything else    -> data {"pid": <pid>, "connection": <how many accepted so far>, "got": <data>}
use strict;
use warnings;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM SOMAXCONN);
use JSON::PP;

my $path = $ENV{BESTER_SOCKET} or die "listen.pl: BESTER_SOCKET is not set\n";
unlink $path;
# LISTEN_BACKLOG: a short listen queue (socat's is 5), ACCEPT_DELAY_MS: a slow accept loop.
my $backlog = $ENV{LISTEN_BACKLOG} || SOMAXCONN;
my $delay = ($ENV{ACCEPT_DELAY_MS} || 0) / 1000;
my $server = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $path, Listen => $backlog)
    or die "listen.pl: cannot listen on $path: $!\n";
$SIG{TERM} = sub { unlink $path; exit 0 };

# utf8: decode from and encode to UTF-8 bytes, so the length prefix counts bytes.
my $json = JSON::PP->new->utf8->canonical;
my $accepted = 0;

sub read_exactly {
    my ($conn, $want) = @_;
    my $got = '';
    while (length($got) < $want) {
        my $n = sysread($conn, $got, $want - length($got), length($got));
        return undef unless $n;    # EOF or error before the whole frame
    }
    return $got;
}

while (1) {
    select(undef, undef, undef, $delay) if $delay;
    my $conn = $server->accept or next;
    $accepted++;
    my $head = read_exactly($conn, 4);
    my $body = defined $head ? read_exactly($conn, unpack('V', $head)) : undef;
    unless (defined $body) {
        close $conn;
        next;
    }
    my $request = $json->decode($body);
    my $data = $request->{payload}{data};
    my $action = ref $data eq 'HASH' ? ($data->{action} // '') : '';
    if ($action eq 'eof') {
        close $conn;
        next;
    }
    my $out = $json->encode({
        header  => { status => "0", command => "reply" },
        payload => {
            type => $request->{payload}{type},
            data => { pid => $$, connection => $accepted, got => $data },
        },
    });
    syswrite($conn, pack('V', length $out) . $out);
    close $conn;
}
