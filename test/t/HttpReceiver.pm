
# Copyright: sequin_cdc contributors
#
# HttpReceiver: the one HTTP receiver for webhook sinks, used by the TAP
# tests (007, 010) as a module and by bench/webhook.sh as a command.
#
# It listens on 127.0.0.1, serves HTTP/1.1 with keep-alive, one connection at
# a time (a sink keeps one open), and appends one line per request to its log,
# tab-separated:
#   arrival (epoch seconds, µs), status answered, delay, changes in the body
#   (its ,"seq": fields), Idempotency-Key, Authorization, Content-Type, and
#   the body (body => 1), or its seqs comma-separated (seqs => 1), or nothing.
# It answers 200 "ok", or what mode_file says ("<status> <delay seconds>",
# read at every request): the delay is slept before the answer.
#
# As a module:
#   my $r = HttpReceiver->new(log => "$dir/requests.log", body => 1,
#                             mode_file => "$dir/mode");
#   $r->start;  ... "http://127.0.0.1:" . $r->port . "/hook"
#   HttpReceiver::set_mode($file, 500, 0);  $r->requests;  $r->clear_log;
#   $r->stop;   $r->start;    # again, same port (stopped at END anyway)
# As a command (runs until killed; bench/webhook.sh):
#   perl test/t/HttpReceiver.pm serve PORT_FILE LOG [seqs]
#   perl test/t/HttpReceiver.pm summary LOG   -> "requests changes last_arrival"
#   perl test/t/HttpReceiver.pm seqs LOG      -> "seq<TAB>arrival µs" per change
#
# Speed: the request loop does no more than find the header end, two header
# lookups and a count of the body's seqs, and keeps its log open (O_APPEND),
# so a sink at batch_size 1 or 1000 is not held back by it (see bench/webhook.sh).

package HttpReceiver;

use strict;
use warnings;

use IO::Handle;
use IO::Socket::INET;
use POSIX ();
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes ();

my @running;    # receivers of this process, stopped at END

# new(log => FILE, [body => 1 | seqs => 1], [mode_file => FILE], [port => N])
sub new
{
	my ($class, %p) = @_;
	die "HttpReceiver: log => FILE is required" unless $p{log};
	return bless { port => 0, %p }, $class;
}

sub port { return $_[0]{port}; }

# Listen (on the port of the previous start, if any) and serve in a child.
sub start
{
	my ($self) = @_;
	my $l = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1',
		LocalPort => $self->{port},
		Listen => 64,
		ReuseAddr => 1,
		Proto => 'tcp') or die "HttpReceiver: cannot listen: $!";
	$self->{port} = $l->sockport;
	my $pid = fork();
	die "HttpReceiver: fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		$self->serve($l);
		POSIX::_exit(0);
	}
	close $l;
	$self->{pid} = $pid;
	push @running, $self;
	return $self;
}

# Stop serving (the open connection is dropped at once).
sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	kill 'KILL', $self->{pid};
	waitpid($self->{pid}, 0);
	$self->{pid} = undef;
	return;
}

END
{
	local $?;
	$_->stop for @running;
}

# Write "<status> <delay>" to $file atomically (read by the receiver at
# every request).
sub set_mode
{
	my ($file, $status, $delay) = @_;
	open(my $fh, '>', "$file.tmp") or die $!;
	print $fh "$status " . ($delay // 0) . "\n";
	close $fh;
	rename("$file.tmp", $file) or die $!;
	return;
}

# Forget what was logged so far (the receiver appends, so it keeps going).
sub clear_log
{
	my ($self) = @_;
	truncate($self->{log}, 0) if -e $self->{log};
	return;
}

# The logged requests, oldest first: [{t, status, delay, changes, key, auth,
# ctype, body}] (body: the body, seqs or '', as logged).
sub requests
{
	my ($self) = @_;
	my $file = ref $self ? $self->{log} : $self;
	my @r;
	open(my $fh, '<', $file) or return ();
	while (my $line = <$fh>)
	{
		chomp $line;
		my @f = split /\t/, $line, 8;
		next unless @f == 8;    # a line being written
		my %r;
		@r{qw(t status delay changes key auth ctype body)} = @f;
		push @r, \%r;
	}
	close $fh;
	return @r;
}

# The accept/serve loop (in the child).
sub serve
{
	my ($self, $listener) = @_;
	$SIG{PIPE} = 'IGNORE';
	open(my $log, '>>', $self->{log}) or die "HttpReceiver: $self->{log}: $!";
	$log->autoflush(1);
	while (my $c = $listener->accept)
	{
		setsockopt($c, IPPROTO_TCP, TCP_NODELAY, 1);
		my $buf = '';
	  CONN: for (;;)
		{
			my $hend;
			while (($hend = index($buf, "\r\n\r\n")) < 0)
			{
				last CONN unless sysread($c, $buf, 262144, length $buf);
			}
			my $head = substr($buf, 0, $hend + 4, '');
			my $len = $head =~ /^content-length:[ \t]*(\d+)/mi ? $1 : 0;
			while (length $buf < $len)
			{
				last CONN unless sysread($c, $buf, 262144, length $buf);
			}
			my $body = substr($buf, 0, $len, '');
			my $t = Time::HiRes::time();

			my ($status, $delay) = (200, 0);
			if ($self->{mode_file} && open(my $mf, '<', $self->{mode_file}))
			{
				my $m = <$mf> // '';
				close $mf;
				($status, $delay) = ($1, $2) if $m =~ /^(\d+)\s+([\d.]+)/;
			}
			my %h;
			$h{ lc $1 } = $2 while $head =~ /^([\w-]+):[ \t]*([^\r\n]*)/mg;
			my @hdr = map { $h{$_} // '' } qw(idempotency-key authorization content-type);
			my $last;
			if ($self->{seqs})
			{
				$last = join(',', $body =~ /,"seq":(\d+)/g);
			}
			my $changes = $self->{seqs}
			  ? ($last eq '' ? 0 : ($last =~ tr/,//) + 1)
			  : scalar(() = $body =~ /,"seq":/g);
			$last = $body if $self->{body};
			syswrite($log, join("\t", sprintf('%.6f', $t), $status, $delay, $changes,
					@hdr, $last // '') . "\n");
			Time::HiRes::sleep($delay) if $delay > 0;
			my $answer = $status == 200 ? "ok" : "failing on purpose";
			last CONN unless syswrite($c,
				"HTTP/1.1 $status X\r\nContent-Type: text/plain\r\nContent-Length: "
				  . length($answer) . "\r\n\r\n$answer");
		}
		close $c;
	}
	return;
}

# The command form (see the header).
sub main
{
	my ($cmd, @args) = @_;
	$cmd //= '';
	if ($cmd eq 'serve' && @args >= 2)
	{
		my ($port_file, $log, $mode) = @args;
		my $r = HttpReceiver->new(log => $log, seqs => ($mode // '') eq 'seqs');
		my $l = IO::Socket::INET->new(
			LocalAddr => '127.0.0.1',
			LocalPort => 0,
			Listen => 64,
			ReuseAddr => 1,
			Proto => 'tcp') or die "HttpReceiver: cannot listen: $!";
		open(my $pf, '>', "$port_file.tmp") or die $!;
		print $pf $l->sockport . "\n";
		close $pf;
		rename("$port_file.tmp", $port_file) or die $!;
		$r->serve($l);
	}
	elsif ($cmd eq 'summary' && @args == 1)
	{
		my @r = requests($args[0]);
		my $changes = 0;
		$changes += $_->{changes} for @r;
		printf "%d %d %s\n", scalar(@r), $changes, @r ? $r[-1]{t} : 0;
	}
	elsif ($cmd eq 'seqs' && @args == 1)
	{
		for my $r (requests($args[0]))
		{
			my $us = sprintf('%.0f', $r->{t} * 1e6);
			print "$_\t$us\n" for split /,/, $r->{body};
		}
	}
	else
	{
		die "usage: perl HttpReceiver.pm serve PORT_FILE LOG [seqs] | summary LOG | seqs LOG\n";
	}
	return 0;
}

main(@ARGV) unless caller;

1;
